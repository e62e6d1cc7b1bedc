package guestagent

import (
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/docker2vm/docker2vm/internal/term"
)

const (
	// outputChunk is the largest data slice sent in one exec_output frame.
	outputChunk = 64 * 1024
	// stdinWindow is the stdin credit advertised to the host per exec.
	stdinWindow = 256 * 1024
	// drainGrace bounds how long output is still collected after the
	// process exited (a background grandchild may keep the pipe open).
	drainGrace = 500 * time.Millisecond
	// exitCodeExecFailed is reported when the command could not be started.
	exitCodeExecFailed = 127
)

// Agent answers exec requests. Create one with NewAgent; call Serve for each
// connection (Serve may be called again after the port was reopened; running
// commands keep streaming to the newest connection).
type Agent struct {
	// Log receives diagnostics; nil discards them.
	Log *log.Logger
	// BaseEnv is the environment commands start from before the request's
	// env entries are applied. NewAgent sets it to os.Environ().
	BaseEnv []string
	// VfsError, when set, tells why the guest's filesystem (sandboxfs)
	// failed, "" when it did not: Serve then announces vfs_error instead
	// of vfs_ready, as Gondolin's sandboxd does.
	VfsError func() string

	wmu sync.Mutex
	w   io.Writer

	smu      sync.Mutex
	sessions map[uint32]*session

	reaper *reaper
}

// NewAgent returns an agent that starts commands from os.Environ().
func NewAgent() *Agent {
	return &Agent{BaseEnv: os.Environ(), sessions: map[uint32]*session{}}
}

// EnableReaper makes the agent reap every child of the process itself
// (wait4(-1)), which it must do when it runs as PID 1 and inherits orphans.
// Never enable it in a process that starts children by other means.
func (a *Agent) EnableReaper() {
	if a.reaper == nil {
		a.reaper = startReaper()
	}
}

func (a *Agent) logf(format string, args ...any) {
	if a.Log != nil {
		a.Log.Printf(format, args...)
	}
}

// send writes one message to the current connection.
func (a *Agent) send(m Message) error {
	frame, err := EncodeFrame(m)
	if err != nil {
		return err
	}
	a.wmu.Lock()
	defer a.wmu.Unlock()
	if a.w == nil {
		return errors.New("not connected")
	}
	_, err = a.w.Write(frame)
	return err
}

func (a *Agent) sendError(id uint32, code, msg string) {
	if err := a.send(Message{Type: TypeError, ID: id, Payload: map[string]any{"code": code, "message": msg}}); err != nil {
		a.logf("send error frame: %v", err)
	}
}

// Serve announces readiness on rw (vfs_ready, or vfs_error when VfsError
// says why not) and handles messages until rw fails or ends. It returns
// the read error (io.EOF on a clean end).
func (a *Agent) Serve(rw io.ReadWriter) error {
	a.wmu.Lock()
	a.w = rw
	a.wmu.Unlock()
	defer func() {
		a.wmu.Lock()
		if a.w == rw {
			a.w = nil
		}
		a.wmu.Unlock()
	}()
	hello := Message{Type: TypeVfsReady}
	if a.VfsError != nil {
		if msg := a.VfsError(); msg != "" {
			hello = Message{Type: TypeVfsError, Payload: map[string]any{"message": msg}}
		}
	}
	if err := a.send(hello); err != nil {
		return fmt.Errorf("send vfs_ready: %w", err)
	}
	for {
		body, err := ReadFrame(rw)
		if err != nil {
			return err
		}
		m, err := DecodeMessage(body)
		if err != nil {
			a.logf("dropping malformed frame: %v", err)
			a.sendError(0, "invalid_request", err.Error())
			continue
		}
		a.handle(m)
	}
}

func (a *Agent) handle(m Message) {
	switch m.Type {
	case TypeExecRequest:
		req, err := ParseExecRequest(m.Payload)
		if err != nil {
			a.sendError(m.ID, "invalid_request", err.Error())
			return
		}
		a.smu.Lock()
		if _, dup := a.sessions[m.ID]; dup {
			a.smu.Unlock()
			a.sendError(m.ID, "invalid_request", fmt.Sprintf("exec id %d already running", m.ID))
			return
		}
		s := &session{agent: a, id: m.ID, req: req}
		s.cond = sync.NewCond(&s.mu)
		a.sessions[m.ID] = s
		a.smu.Unlock()
		go s.run()
	case TypeStdinData:
		s := a.lookup(m.ID)
		if s == nil {
			return // the command may have finished already
		}
		data, _ := m.Payload["data"].([]byte)
		eof, _ := m.Payload["eof"].(bool)
		s.pushStdin(data, eof)
	case TypePtyResize:
		if s := a.lookup(m.ID); s != nil {
			s.resize(optUint(m.Payload, "rows"), optUint(m.Payload, "cols"))
		}
	case TypeExecWindow:
		// Output credits: this agent does not throttle output, the host
		// buffers whatever it receives.
	default:
		a.sendError(m.ID, "unsupported", fmt.Sprintf("message type %q is not supported by this agent", m.Type))
	}
}

func (a *Agent) lookup(id uint32) *session {
	a.smu.Lock()
	defer a.smu.Unlock()
	return a.sessions[id]
}

func (a *Agent) remove(id uint32) {
	a.smu.Lock()
	delete(a.sessions, id)
	a.smu.Unlock()
}

// ---------------------------------------------------------------- sessions

type stdinChunk struct {
	data []byte
	eof  bool
}

type session struct {
	agent *Agent
	id    uint32
	req   ExecRequest

	mu   sync.Mutex
	cond *sync.Cond
	// stdin chunks not yet written to the child. The host never has more
	// than stdinWindow bytes outstanding, which bounds this queue.
	stdinBuf    []stdinChunk
	stdinClosed bool     // no more chunks are accepted
	pty         *os.File // pty master when req.Pty
}

func (s *session) closeStdinLocked() {
	s.stdinClosed = true
	s.cond.Broadcast()
}

func (s *session) pushStdin(data []byte, eof bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stdinClosed {
		return
	}
	s.stdinBuf = append(s.stdinBuf, stdinChunk{data: data, eof: eof})
	if eof {
		s.stdinClosed = true
	}
	s.cond.Broadcast()
}

// nextStdin blocks until a chunk is queued; ok is false once the queue is
// closed and drained.
func (s *session) nextStdin() (c stdinChunk, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.stdinBuf) == 0 && !s.stdinClosed {
		s.cond.Wait()
	}
	if len(s.stdinBuf) == 0 {
		return stdinChunk{}, false
	}
	c = s.stdinBuf[0]
	s.stdinBuf[0] = stdinChunk{}
	s.stdinBuf = s.stdinBuf[1:]
	return c, true
}

func (s *session) resize(rows, cols uint64) {
	s.mu.Lock()
	p := s.pty
	s.mu.Unlock()
	if p != nil && rows > 0 && cols > 0 && rows < 1<<16 && cols < 1<<16 {
		_ = term.SetSize(p, int(cols), int(rows))
	}
}

func (s *session) output(stream string, data []byte) {
	if err := s.agent.send(Message{Type: TypeExecOutput, ID: s.id, Payload: map[string]any{"stream": stream, "data": data}}); err != nil {
		s.agent.logf("exec %d: send output: %v", s.id, err)
	}
}

func (s *session) finish(code int, sig int) {
	p := map[string]any{"exit_code": code}
	if sig != 0 {
		p["signal"] = sig
	}
	// Remove first so a late stdin_data is ignored, not queued.
	s.agent.remove(s.id)
	if err := s.agent.send(Message{Type: TypeExecResponse, ID: s.id, Payload: p}); err != nil {
		s.agent.logf("exec %d: send response: %v", s.id, err)
	}
}

// failStart reports a command that could not be started the way a shell
// does: a message on stderr and exit status 127.
func (s *session) failStart(err error) {
	s.output("stderr", []byte(fmt.Sprintf("sandboxd: %s: %v\n", s.req.Cmd, err)))
	s.finish(exitCodeExecFailed, 0)
}

func (s *session) run() {
	req := s.req
	env := MergeEnv(s.agent.BaseEnv, req.Env)
	path, err := lookPath(req.Cmd, env)
	if err != nil {
		s.failStart(err)
		return
	}
	argv := append([]string{req.Cmd}, req.Argv...)
	if req.Cwd != "" {
		if st, err := os.Stat(req.Cwd); err != nil {
			s.failStart(fmt.Errorf("cwd: %w", err))
			return
		} else if !st.IsDir() {
			s.failStart(fmt.Errorf("cwd %s: not a directory", req.Cwd))
			return
		}
	}

	var (
		files    [3]*os.File // child's stdin, stdout, stderr
		closeAft []*os.File  // our copies of the child's ends
		readers  = map[string]*os.File{}
		stdinW   *os.File
		sys      = &syscall.SysProcAttr{Setsid: true}
	)
	cleanup := func() {
		for _, f := range closeAft {
			f.Close()
		}
		for _, f := range readers {
			f.Close()
		}
		if stdinW != nil {
			stdinW.Close()
		}
	}
	if req.Pty {
		master, slave, err := term.OpenPTY()
		if err != nil {
			s.failStart(fmt.Errorf("pty: %w", err))
			return
		}
		files = [3]*os.File{slave, slave, slave}
		closeAft = append(closeAft, slave)
		readers["stdout"] = master
		stdinW = master
		s.mu.Lock()
		s.pty = master
		s.mu.Unlock()
		sys.Setctty = true
		sys.Ctty = 0
	} else {
		if req.Stdin {
			r, w, err := os.Pipe()
			if err != nil {
				s.failStart(err)
				return
			}
			files[0], stdinW = r, w
			closeAft = append(closeAft, r)
		} else {
			devnull, err := os.Open(os.DevNull)
			if err != nil {
				s.failStart(err)
				return
			}
			files[0] = devnull
			closeAft = append(closeAft, devnull)
		}
		for i, name := range []string{"stdout", "stderr"} {
			r, w, err := os.Pipe()
			if err != nil {
				cleanup()
				s.failStart(err)
				return
			}
			files[i+1] = w
			closeAft = append(closeAft, w)
			readers[name] = r
		}
	}

	wait, err := s.agent.start(path, argv, env, req.Cwd, files[:], sys)
	for _, f := range closeAft {
		f.Close()
	}
	closeAft = nil
	if err != nil {
		cleanup()
		s.failStart(err)
		return
	}

	// The stdin window goes out before any output is read: the host sees
	// it first, whatever the command writes at once.
	stdinDone := make(chan struct{})
	if req.Stdin || req.Pty {
		go s.pumpStdin(stdinW, req.Pty, stdinDone)
		if err := s.agent.send(Message{Type: TypeStdinWindow, ID: s.id, Payload: map[string]any{"stdin": stdinWindow}}); err != nil {
			s.agent.logf("exec %d: send stdin_window: %v", s.id, err)
		}
	} else {
		close(stdinDone)
	}

	var outWG sync.WaitGroup
	for name, r := range readers {
		outWG.Add(1)
		go func(name string, r *os.File) {
			defer outWG.Done()
			buf := make([]byte, outputChunk)
			for {
				n, err := r.Read(buf)
				if n > 0 {
					s.output(name, append([]byte(nil), buf[:n]...))
				}
				if err != nil {
					return // EOF, EIO (pty closed) or the drain deadline
				}
			}
		}(name, r)
	}

	status := wait()

	// Collect what is left in the pipes, but do not wait forever for a
	// background process that inherited them.
	done := make(chan struct{})
	go func() { outWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(drainGrace):
		for _, r := range readers {
			_ = r.SetReadDeadline(time.Now())
		}
		<-done
	}
	// Stop the stdin pump (in pipe mode it closes stdinW).
	s.mu.Lock()
	s.closeStdinLocked()
	s.pty = nil
	s.mu.Unlock()
	if stdinW != nil {
		_ = stdinW.SetWriteDeadline(time.Now())
	}
	<-stdinDone
	for _, r := range readers {
		r.Close() // includes the pty master
	}

	code, sig := 0, 0
	switch {
	case status.Exited():
		code = status.ExitStatus()
	case status.Signaled():
		sig = int(status.Signal())
		code = 128 + sig
	default:
		code = 1
	}
	s.finish(code, sig)
}

// pumpStdin copies queued stdin_data to the child and returns credits.
// In pipe mode it owns w and closes it (EOF for the child); in pty mode w is
// the master, which run closes.
func (s *session) pumpStdin(w *os.File, pty bool, done chan<- struct{}) {
	defer close(done)
	if !pty {
		defer w.Close()
	}
	broken := false
	for {
		chunk, ok := s.nextStdin()
		if !ok {
			return
		}
		if len(chunk.data) > 0 && !broken {
			if _, err := w.Write(chunk.data); err != nil {
				broken = true // the child closed its stdin; drop the rest
			}
		}
		if len(chunk.data) > 0 && !chunk.eof {
			_ = s.agent.send(Message{Type: TypeStdinWindow, ID: s.id, Payload: map[string]any{"stdin": len(chunk.data)}})
		}
		if chunk.eof {
			if pty && !broken {
				_, _ = w.Write([]byte{4}) // ^D: end of input for the terminal
			}
			if !pty {
				return // closing the pipe signals EOF
			}
		}
	}
}

// start launches the process; wait blocks until it exits.
func (a *Agent) start(path string, argv, env []string, dir string, files []*os.File, sys *syscall.SysProcAttr) (wait func() syscall.WaitStatus, err error) {
	if a.reaper != nil {
		return a.reaper.start(path, argv, env, dir, files, sys)
	}
	p, err := os.StartProcess(path, argv, &os.ProcAttr{Dir: dir, Env: env, Files: files, Sys: sys})
	if err != nil {
		return nil, err
	}
	return func() syscall.WaitStatus {
		st, err := p.Wait()
		if err != nil {
			return syscall.WaitStatus(1 << 8) // exit status 1
		}
		return st.Sys().(syscall.WaitStatus)
	}, nil
}

// MergeEnv applies "K=V" entries in over to base; later entries win. Entries
// without "=" are ignored.
func MergeEnv(base, over []string) []string {
	out := make([]string, 0, len(base)+len(over))
	index := map[string]int{}
	add := func(kv string) {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return
		}
		if i, seen := index[k]; seen {
			out[i] = kv
			return
		}
		index[k] = len(out)
		out = append(out, kv)
	}
	for _, kv := range base {
		add(kv)
	}
	for _, kv := range over {
		add(kv)
	}
	return out
}

// lookPath resolves cmd like execvp does, using PATH from env (not from the
// agent's own environment).
func lookPath(cmd string, env []string) (string, error) {
	if strings.Contains(cmd, "/") {
		if err := checkExecutable(cmd); err != nil {
			return "", err
		}
		return cmd, nil
	}
	pathVar := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathVar = v
		}
	}
	for _, dir := range filepath.SplitList(pathVar) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, cmd)
		if checkExecutable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("command not found")
}

func checkExecutable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if st.IsDir() {
		return fmt.Errorf("is a directory")
	}
	if st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("permission denied")
	}
	return nil
}
