//go:build !linux && !darwin && !freebsd && !netbsd && !openbsd

package term

import "io"

// Width: no terminal size here (0: unknown); see IsTerminal.
func Width(w io.Writer) int { return 0 }
