//go:build unix

package convert

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker2vm/docker2vm/internal/cachedir"
	"github.com/docker2vm/docker2vm/internal/diskio/diskiotest"
)

// TestResultCacheNonRegular plants a FIFO, a socket, a device node and a
// directory at each file of a result-cache entry: the next run drops the
// entry and converts again (never waiting on an open), and pruning the
// whole cache does not hang either.
func TestResultCacheNonRegular(t *testing.T) {
	ctx := context.Background()
	tagSrc, _ := registrySource(t)
	for _, file := range []string{cachedir.ResultFile, RootfsFile} {
		for _, k := range diskiotest.Kinds {
			t.Run(file+"/"+k.Kind, func(t *testing.T) {
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
				k.Make(t, p)
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
					t.Fatal("the run hangs on the planted " + k.Kind)
				}
				if strings.Contains(progress.String(), anyHit) || !strings.Contains(progress.String(), "failed its check and was removed") {
					t.Fatalf("the entry with a %s was used:\n%s", k.Kind, progress.String())
				}
				// Plant it again and prune everything.
				names = entries(t, cache)
				if len(names) != 1 {
					t.Fatalf("entries after the rerun %q", names)
				}
				p = filepath.Join(cachedir.ResultsDir(cache), names[0], file)
				os.RemoveAll(p)
				k.Make(t, p)
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
					t.Fatal("pruning hangs on the planted " + k.Kind)
				}
				if got := entries(t, cache); len(got) != 0 {
					t.Fatalf("entries after pruning: %q", got)
				}
			})
		}
	}
}
