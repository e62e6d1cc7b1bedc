package term

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// isTerminalFd reports whether fd is a terminal (tcgetattr succeeds): a
// character device such as /dev/null is not one.
func isTerminalFd(fd uintptr) bool {
	_, err := unix.IoctlGetTermios(int(fd), unix.TCGETS)
	return err == nil
}

// OpenPTY opens a pseudo-terminal: its master and its slave, neither of
// them the controlling terminal of this process.
func OpenPTY() (master, slave *os.File, err error) {
	master, err = os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("opening a pseudo-terminal: %w", err)
	}
	fail := func(err error) (*os.File, *os.File, error) {
		master.Close()
		return nil, nil, fmt.Errorf("opening a pseudo-terminal: %w", err)
	}
	rc, err := master.SyscallConn()
	if err != nil {
		return fail(err)
	}
	var n uint32
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		if ierr = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); ierr != nil {
			return
		}
		n, ierr = unix.IoctlGetUint32(int(fd), unix.TIOCGPTN)
	}); err != nil {
		return fail(err)
	}
	if ierr != nil {
		return fail(ierr)
	}
	slave, err = os.OpenFile("/dev/pts/"+strconv.FormatUint(uint64(n), 10), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return fail(err)
	}
	return master, slave, nil
}

// SetSize sets the size of the terminal f (a pseudo-terminal's master or
// slave), as a terminal emulator does when its window is resized. It goes
// through f's raw descriptor without f.Fd(), which would switch f to
// blocking mode and end its read deadlines.
func SetSize(f *os.File, cols, rows int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("setting the size of terminal %s: %w", f.Name(), err)
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Col: uint16(cols), Row: uint16(rows)})
	}); err != nil {
		ierr = err
	}
	if ierr != nil {
		return fmt.Errorf("setting the size of terminal %s: %w", f.Name(), ierr)
	}
	return nil
}
