//go:build unix

package lock

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

func tryLock(f *os.File) (bool, error) { return flock(f, unix.LOCK_EX) }

// tryShared takes a shared lock on f without waiting: any number of
// processes may hold one, and it keeps an exclusive lock out.
func tryShared(f *os.File) (bool, error) { return flock(f, unix.LOCK_SH) }

// flock takes the lock how (LOCK_EX or LOCK_SH) without waiting; false
// when another process holds a conflicting one.
func flock(f *os.File, how int) (bool, error) {
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, unix.EWOULDBLOCK):
			return false, nil
		case errors.Is(err, unix.EINTR):
			continue
		default:
			return false, err
		}
	}
}
