package buildkit

import (
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/docker2vm/docker2vm/internal/term"
)

// console is the terminal a builder draws its live progress on: a
// pseudo-terminal whose output is copied to the user's terminal and kept
// for the error message (the failing step's last lines and BuildKit's
// error are printed there too).
type console struct {
	term          *os.File
	master, slave *os.File
	copied        chan struct{}
	winch         chan os.Signal
	closeOnce     sync.Once
}

// newConsole opens a pseudo-terminal of user's size whose output goes to
// user (the user's terminal) and tail.
func newConsole(user *os.File, tail io.Writer) (*console, error) {
	master, slave, err := term.OpenPTY()
	if err != nil {
		return nil, err
	}
	// Output passes as the builder writes it: the user's terminal does
	// its own newline translation.
	if tio, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS); err == nil {
		tio.Oflag &^= unix.OPOST
		_ = unix.IoctlSetTermios(int(slave.Fd()), unix.TCSETS, tio)
	}
	c := &console{term: user, master: master, slave: slave, copied: make(chan struct{}), winch: make(chan os.Signal, 1)}
	c.resize()
	signal.Notify(c.winch, syscall.SIGWINCH)
	go func() {
		for range c.winch {
			c.resize()
		}
	}()
	go func() {
		defer close(c.copied)
		// The read ends with EIO once every copy of the slave is closed.
		_, _ = io.Copy(io.MultiWriter(user, tail), master)
	}()
	return c, nil
}

// resize gives the pseudo-terminal the size of the user's terminal.
func (c *console) resize() {
	ws, err := unix.IoctlGetWinsize(int(c.term.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return
	}
	_ = unix.IoctlSetWinsize(int(c.slave.Fd()), unix.TIOCSWINSZ, ws)
}

// File is what the builder gets as stdout and stderr.
func (c *console) File() *os.File { return c.slave }

// Started drops this process's copy of the slave once the builder holds
// its own.
func (c *console) Started() { c.slave.Close() }

// Close waits for the builder's last output to be copied (a moment at
// most: a process it left behind may hold the terminal open), then closes
// the pseudo-terminal.
func (c *console) Close() {
	c.closeOnce.Do(func() {
		c.slave.Close()
		select {
		case <-c.copied:
		case <-time.After(2 * time.Second):
		}
		signal.Stop(c.winch)
		close(c.winch)
		c.master.Close()
		<-c.copied
	})
}
