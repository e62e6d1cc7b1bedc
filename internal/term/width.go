//go:build linux || darwin || freebsd || netbsd || openbsd

package term

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Width is the number of columns of the terminal w is, or 0 when w is not
// a terminal or does not say. Asked at each redraw, so a resize counts.
func Width(w io.Writer) int {
	f, ok := w.(*os.File)
	if !ok {
		return 0
	}
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return 0
	}
	return int(ws.Col)
}
