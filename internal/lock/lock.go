// Package lock takes exclusive locks on files, to serialise docker2vm
// processes that write the same output or cache entry. A lock is an
// advisory flock held through an open descriptor: the system releases it
// when the process ends, however it ends, so a lock never outlives its
// owner and a crashed run never blocks the next one.
package lock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"
)

// File is a held lock.
type File struct {
	f    *os.File
	path string
}

// ErrHeld is returned by Try when another process holds the lock.
var ErrHeld = errors.New("held by another process")

// Try takes the lock at path (created if missing) without waiting.
func Try(path string) (*File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	ok, err := tryLock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	if !ok {
		f.Close()
		return nil, ErrHeld
	}
	// The holder we waited for may have removed the file (Remove) before
	// releasing it: then this lock is on a file nobody else will open.
	// Only a lock on the file that path names now counts.
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if cur, err := os.Stat(path); err != nil || !os.SameFile(fi, cur) {
		f.Close()
		return nil, ErrHeld // try again: another process holds, or will hold, the new file
	}
	return &File{f: f, path: path}, nil
}

// TryFile takes the lock on an already open file without waiting: false
// when another open file (in this process or another) holds it. The lock
// lasts until f is closed, or until its owner dies. It lets a file being
// written announce that a live process owns it (see Held).
func TryFile(f *os.File) (bool, error) {
	ok, err := tryLock(f)
	if err != nil {
		return false, fmt.Errorf("locking %s: %w", f.Name(), err)
	}
	return ok, nil
}

// Acquire takes the lock at path, waiting while another process holds
// it; waiting is called once when it has to wait. It gives up when ctx is
// done.
func Acquire(ctx context.Context, path string, waiting func()) (*File, error) {
	told := false
	for delay := 10 * time.Millisecond; ; delay = min(2*delay, 250*time.Millisecond) {
		l, err := Try(path)
		if !errors.Is(err, ErrHeld) {
			return l, err
		}
		if !told && waiting != nil {
			waiting()
			told = true
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
	}
}

// Held reports whether a live process holds the lock at path (false when
// the file does not exist).
func Held(path string) bool {
	l, err := Try(path)
	if err != nil {
		return errors.Is(err, ErrHeld)
	}
	l.Unlock()
	return false
}

// Remove deletes the lock file and releases the lock: nothing is left
// behind, and a process that was waiting on the old file takes the lock
// on a new one (see Try).
func (l *File) Remove() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := os.Remove(l.path)
	if cerr := l.Unlock(); err == nil {
		err = cerr
	}
	return err
}

// Unlock releases the lock.
func (l *File) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the descriptor releases the flock
	l.f = nil
	return err
}

// TryShared takes a shared lock on the open file f without waiting, held
// until f is closed: it tells other processes that f is in use (TryFile,
// an exclusive lock, fails while any shared one is held).
func TryShared(f *os.File) (bool, error) { return tryShared(f) }
