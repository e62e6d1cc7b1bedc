//go:build unix

// Package diskiotest makes, for tests, the things that can sit where
// docker2vm expects a regular file in a directory it does not fully
// control: each is refused without waiting on it (see diskio.OpenRegular).
package diskiotest

import (
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/docker2vm/docker2vm/internal/require"
)

// NotRegular is one kind of file other than a regular file. Kind is how
// diskio.Kind names it.
type NotRegular struct {
	Kind string
	// Make makes one at p, or skips the test where this machine cannot (a
	// device node needs root; a socket path is limited to about 100 bytes,
	// so callers plant sockets under a short os.MkdirTemp("", "x") root).
	Make func(t testing.TB, p string)
}

// Kinds are a FIFO (opening one blocks), a socket, a character device
// (/dev/null's numbers: reading one could return anything, or never end)
// and a non-empty directory (rename cannot replace it).
var Kinds = []NotRegular{
	{"FIFO", func(t testing.TB, p string) {
		t.Helper()
		if err := syscall.Mkfifo(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}},
	{"socket", func(t testing.TB, p string) {
		t.Helper()
		l, err := net.Listen("unix", p)
		if err != nil {
			require.Missing(t, "cannot make a unix socket at %s: %v", p, err)
			return
		}
		t.Cleanup(func() { l.Close() })
	}},
	{"character device", func(t testing.TB, p string) {
		t.Helper()
		if err := syscall.Mknod(p, syscall.S_IFCHR|0o644, int(1<<8|3)); err != nil {
			require.Missing(t, "cannot make a device node (needs root): %v", err)
		}
	}},
	{"directory", func(t testing.TB, p string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(p, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
	}},
}

// ShortDir is a new directory with a short path (for sockets), removed
// when the test ends.
func ShortDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "d2v")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
