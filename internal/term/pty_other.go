//go:build !linux

package term

import (
	"errors"
	"os"
)

// errNoPTY: pseudo-terminals are opened on Linux only (the guest agent and
// the tests that need them run there).
var errNoPTY = errors.New("pseudo-terminals: linux only")

// OpenPTY is not available here.
func OpenPTY() (master, slave *os.File, err error) { return nil, nil, errNoPTY }

// SetSize is not available here.
func SetSize(f *os.File, cols, rows int) error { return errNoPTY }
