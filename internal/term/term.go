// Package term tells whether output goes to a terminal, so that live
// progress is drawn only for people.
package term

import (
	"io"
	"os"
)

// IsTerminal reports whether w is a terminal (not merely a character
// device: /dev/null is not one).
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isTerminalFd(f.Fd())
}
