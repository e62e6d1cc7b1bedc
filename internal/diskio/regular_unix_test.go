//go:build unix

package diskio

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/docker2vm/docker2vm/internal/require"
)

// TestOpenRegular: a regular file opens; anything else fails at once with a
// NotRegularError naming its kind, and a FIFO is never waited on.
func TestOpenRegular(t *testing.T) {
	dir, err := os.MkdirTemp("", "or") // short: socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	reg := filepath.Join(dir, "file")
	os.WriteFile(reg, []byte("data"), 0o644)
	for _, tc := range []struct {
		name, kind string
		make       func(p string) error
	}{
		{"fifo", "FIFO", func(p string) error { return syscall.Mkfifo(p, 0o644) }},
		{"directory", "directory", func(p string) error { return os.Mkdir(p, 0o755) }},
		{"symlink to a regular file", "symbolic link", func(p string) error { return os.Symlink(reg, p) }},
		{"socket", "socket", func(p string) error {
			l, err := net.Listen("unix", p)
			if err == nil {
				t.Cleanup(func() { l.Close() })
			}
			return err
		}},
		{"device", "character device", func(p string) error { return syscall.Mknod(p, syscall.S_IFCHR|0o644, int(1<<8|3)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name[:4])
			if err := tc.make(p); err != nil {
				require.Missing(t, "cannot make a %s here: %v", tc.kind, err)
				return
			}
			done := make(chan error, 1)
			go func() {
				f, err := OpenRegular(p, os.O_RDONLY)
				if f != nil {
					f.Close()
				}
				done <- err
			}()
			select {
			case err := <-done:
				var nr *NotRegularError
				if !errors.As(err, &nr) || nr.Kind != tc.kind || nr.Path != p {
					t.Fatalf("OpenRegular: %v, want a %s", err, tc.kind)
				}
			case <-time.After(10 * time.Second):
				if w, err := os.OpenFile(p, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
					w.Close()
				}
				t.Fatal("OpenRegular waits on a " + tc.kind)
			}
			if _, err := ReadRegular(p, 0); err == nil {
				t.Fatal("ReadRegular read a " + tc.kind)
			}
		})
	}
	if b, err := ReadRegular(reg, 0); err != nil || string(b) != "data" {
		t.Fatalf("ReadRegular: %q, %v", b, err)
	}
	if _, err := ReadRegular(reg, 3); err == nil {
		t.Fatal("ReadRegular read past its limit")
	}
}
