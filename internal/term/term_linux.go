package term

import "golang.org/x/sys/unix"

// isTerminalFd reports whether fd is a terminal (tcgetattr succeeds): a
// character device such as /dev/null is not one.
func isTerminalFd(fd uintptr) bool {
	_, err := unix.IoctlGetTermios(int(fd), unix.TCGETS)
	return err == nil
}
