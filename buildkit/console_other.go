//go:build !linux

package buildkit

import (
	"errors"
	"io"
	"os"
)

// console: without a pseudo-terminal here, the builder draws on the
// user's terminal directly (see Build) and its output is not kept.
type console struct{}

func newConsole(term *os.File, tail io.Writer) (*console, error) {
	return nil, errors.New("no pseudo-terminal support on this system")
}

func (c *console) File() *os.File { return nil }
func (c *console) Started()       {}
func (c *console) Close()         {}
