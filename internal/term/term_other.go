//go:build !linux && !darwin && !freebsd && !netbsd && !openbsd

package term

// isTerminalFd: no terminal detection here; BuildKit's progress is plain.
func isTerminalFd(fd uintptr) bool { return false }
