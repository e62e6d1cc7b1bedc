package guestagent

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// reaper reaps every child of the process (needed as PID 1, where orphans
// are re-parented to us) and hands exit statuses to the goroutines that
// started those children.
type reaper struct {
	mu      sync.Mutex
	waiters map[int]chan syscall.WaitStatus
}

func startReaper() *reaper {
	r := &reaper{waiters: map[int]chan syscall.WaitStatus{}}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGCHLD)
	go func() {
		for range sigs {
			r.reap()
		}
	}()
	return r
}

func (r *reaper) reap() {
	// Hold the lock while waiting so a child that exits between ForkExec and
	// its registration cannot be mistaken for an orphan.
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
		if ch, ok := r.waiters[pid]; ok {
			delete(r.waiters, pid)
			ch <- ws
		}
		// else: an orphan re-parented to PID 1; its status is discarded.
	}
}

func (r *reaper) start(path string, argv, env []string, dir string, files []*os.File, sys *syscall.SysProcAttr) (func() syscall.WaitStatus, error) {
	fds := make([]uintptr, len(files))
	for i, f := range files {
		fds[i] = f.Fd()
	}
	r.mu.Lock()
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{Dir: dir, Env: env, Files: fds, Sys: sys})
	if err != nil {
		r.mu.Unlock()
		return nil, err
	}
	ch := make(chan syscall.WaitStatus, 1)
	r.waiters[pid] = ch
	r.mu.Unlock()
	// A SIGCHLD delivered before Notify saw it is never lost: reap() loops
	// until no child is left, and every new SIGCHLD triggers it again.
	go r.reap()
	return func() syscall.WaitStatus { return <-ch }, nil
}
