//go:build unix

package convert

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker2vm/docker2vm/internal/cachedir"
	"github.com/docker2vm/docker2vm/internal/require"
)

// plantKinds make something other than a regular file at a path.
var plantKinds = []struct {
	kind  string
	plant func(t *testing.T, p string)
}{
	{"FIFO", func(t *testing.T, p string) {
		if err := syscall.Mkfifo(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}},
	{"socket", func(t *testing.T, p string) {
		l, err := net.Listen("unix", p)
		if err != nil {
			require.Missing(t, "cannot make a unix socket here: %v", err)
			return
		}
		t.Cleanup(func() { l.Close() })
	}},
	{"character device", func(t *testing.T, p string) {
		if err := syscall.Mknod(p, syscall.S_IFCHR|0o644, int(1<<8|3)); err != nil {
			require.Missing(t, "cannot make a device node (needs root): %v", err)
		}
	}},
	{"directory", func(t *testing.T, p string) {
		if err := os.MkdirAll(filepath.Join(p, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
	}},
}

// TestResultCacheNonRegular plants a FIFO, a socket, a device node and a
// directory at each file of a result-cache entry: the next run drops the
// entry and converts again (never waiting on an open), and pruning the
// whole cache does not hang either.
func TestResultCacheNonRegular(t *testing.T) {
	ctx := context.Background()
	tagSrc, _ := registrySource(t)
	for _, file := range []string{cachedir.ResultFile, RootfsFile} {
		for _, k := range plantKinds {
			t.Run(file+"/"+k.kind, func(t *testing.T) {
				// A short root: socket paths are limited to about 100 bytes.
				cache, err := os.MkdirTemp("", "rc")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { os.RemoveAll(cache) })
				work := t.TempDir()
				if _, err := Run(ctx, cachedOptions(tagSrc, filepath.Join(work, "first"), cache, nil)); err != nil {
					t.Fatal(err)
				}
				names := entries(t, cache)
				if len(names) != 1 {
					t.Fatalf("entries %q", names)
				}
				p := filepath.Join(cachedir.ResultsDir(cache), names[0], file)
				if err := os.Remove(p); err != nil {
					t.Fatal(err)
				}
				k.plant(t, p)
				unblock := func() { // should a FIFO open hang, end it
					if w, err := os.OpenFile(p, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
						w.Close()
					}
				}
				var progress bytes.Buffer
				done := make(chan error, 1)
				go func() {
					_, err := Run(ctx, cachedOptions(tagSrc, filepath.Join(work, "second"), cache, &progress))
					done <- err
				}()
				select {
				case err := <-done:
					if err != nil {
						t.Fatal(err)
					}
				case <-time.After(60 * time.Second):
					unblock()
					t.Fatal("the run hangs on the planted " + k.kind)
				}
				if strings.Contains(progress.String(), anyHit) || !strings.Contains(progress.String(), "failed its check and was removed") {
					t.Fatalf("the entry with a %s was used:\n%s", k.kind, progress.String())
				}
				// Plant it again and prune everything.
				names = entries(t, cache)
				if len(names) != 1 {
					t.Fatalf("entries after the rerun %q", names)
				}
				p = filepath.Join(cachedir.ResultsDir(cache), names[0], file)
				os.RemoveAll(p)
				k.plant(t, p)
				pruned := make(chan error, 1)
				go func() {
					_, err := cachedir.RemoveAll(cache)
					pruned <- err
				}()
				select {
				case err := <-pruned:
					if err != nil {
						t.Fatal(err)
					}
				case <-time.After(30 * time.Second):
					unblock()
					t.Fatal("pruning hangs on the planted " + k.kind)
				}
				if got := entries(t, cache); len(got) != 0 {
					t.Fatalf("entries after pruning: %q", got)
				}
			})
		}
	}
}
