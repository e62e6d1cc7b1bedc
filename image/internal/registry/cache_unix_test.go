//go:build unix

package registry

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/docker2vm/docker2vm/image/internal/blob"
	"github.com/docker2vm/docker2vm/internal/diskio/diskiotest"
	"github.com/docker2vm/docker2vm/internal/require"
)

// TestCacheNonRegularEntries: whatever sits at an entry's path that is not
// a regular file is never opened (a FIFO would block open), but removed and
// replaced by the next download: found by a read, or, when the download
// comes first (the fetcher only asks has), by the download's commit.
func TestCacheNonRegularEntries(t *testing.T) {
	data := bytes.Repeat([]byte("blob "), 5000)
	desc := v1.Descriptor{Digest: blob.Sha256Of(data), Size: int64(len(data))}
	tests := []struct {
		name string
		kind string
		make func(t *testing.T, p string)
	}{
		{"fifo", "FIFO", func(t *testing.T, p string) {
			if err := syscall.Mkfifo(p, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"empty directory", "directory", func(t *testing.T, p string) {
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}},
		{"non-empty directory", "directory", func(t *testing.T, p string) {
			if err := os.MkdirAll(filepath.Join(p, "sub"), 0o755); err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(p, "sub", "f"), data, 0o644)
			if err := syscall.Mkfifo(filepath.Join(p, "fifo"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"symlink to a good copy", "symbolic link", func(t *testing.T, p string) {
			good := filepath.Join(t.TempDir(), "good")
			os.WriteFile(good, data, 0o644)
			if err := os.Symlink(good, p); err != nil {
				t.Fatal(err)
			}
		}},
		{"dangling symlink", "symbolic link", func(t *testing.T, p string) {
			if err := os.Symlink("/nonexistent/docker2vm-test", p); err != nil {
				t.Fatal(err)
			}
		}},
		{"socket", "socket", func(t *testing.T, p string) {
			l, err := net.Listen("unix", p)
			if err != nil {
				require.Missing(t, "cannot make a unix socket here: %v", err)
			}
			t.Cleanup(func() { l.Close() })
		}},
		{"character device", "character device", func(t *testing.T, p string) {
			// /dev/null's numbers (1, 3 on Linux); needs root.
			if err := syscall.Mknod(p, syscall.S_IFCHR|0o644, int(1<<8|3)); err != nil {
				require.Missing(t, "cannot make a device node (needs root): %v", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name+"/download first", func(t *testing.T) {
			c, progress := shortCache(t)
			p := c.path(desc.Digest)
			tc.make(t, p)
			if c.has(desc) {
				t.Fatal("has reports the entry")
			}
			rc := c.tee(io.NopCloser(bytes.NewReader(data)), desc)
			io.ReadAll(rc)
			rc.Close()
			if fi, err := os.Lstat(p); err != nil || !fi.Mode().IsRegular() {
				t.Fatalf("after a download the entry is %v, %v; want a regular file", fi, err)
			}
			if want := "replaced " + desc.Digest.String() + ": it was a " + tc.kind; !strings.Contains(progress.String(), want) {
				t.Errorf("progress %q, want %q", progress.String(), want)
			}
			f, ok, err := c.get(context.Background(), desc)
			if !ok || err != nil {
				t.Fatalf("the entry: %v, %v", ok, err)
			}
			f.Close()
		})
		t.Run(tc.name, func(t *testing.T) {
			c, progress := shortCache(t)
			p := c.path(desc.Digest)
			tc.make(t, p)

			type result struct {
				ok  bool
				err error
			}
			done := make(chan result, 1)
			go func() {
				f, ok, err := c.get(context.Background(), desc)
				if f != nil {
					f.Close()
				}
				done <- result{ok, err}
			}()
			var r result
			select {
			case r = <-done:
			case <-time.After(30 * time.Second):
				// Unblock a FIFO open so the goroutine ends.
				if w, err := os.OpenFile(p, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
					w.Close()
				}
				t.Fatal("get hangs on a non-regular entry")
			}
			if r.ok || r.err != nil {
				t.Fatalf("get = %v, %v; want a miss", r.ok, r.err)
			}
			if _, err := os.Lstat(p); !os.IsNotExist(err) {
				t.Fatalf("the %s is still there: %v", tc.kind, err)
			}
			if want := "replaced " + desc.Digest.String() + ": it was a " + tc.kind; !strings.Contains(progress.String(), want) {
				t.Errorf("progress %q, want %q", progress.String(), want)
			}
			// The next download fills the entry.
			rc := c.tee(io.NopCloser(bytes.NewReader(data)), desc)
			io.ReadAll(rc)
			rc.Close()
			f, ok, err := c.get(context.Background(), desc)
			if !ok || err != nil {
				t.Fatalf("the replacement entry: %v, %v", ok, err)
			}
			f.Close()
		})
	}
}

// TestCacheReclaimsPartialDownloads: a use of the cache removes the
// temporary files of runs that died, never one a live writer holds.
func TestCacheReclaimsPartialDownloads(t *testing.T) {
	if dir := os.Getenv("IMAGE_CACHE_TEST_WRITER"); dir != "" {
		// The child: start writing an entry, say so, and wait to be killed.
		c, err := newBlobCache(dir, nil)
		if err != nil {
			os.Exit(3)
		}
		w, err := c.newWriter()
		if err != nil {
			os.Exit(4)
		}
		w.f.Write(make([]byte, 1<<20))
		fmt.Println("writing")
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	root := t.TempDir()
	c, err := newBlobCache(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A writer in another process, killed mid-write.
	cmd := exec.Command(os.Args[0], "-test.run=^TestCacheReclaimsPartialDownloads$")
	cmd.Env = append(os.Environ(), "IMAGE_CACHE_TEST_WRITER="+root)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _ := out.Read(buf)
	if !strings.Contains(string(buf[:n]), "writing") {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child: %q", buf[:n])
	}
	temps := func() []string {
		ents, _ := os.ReadDir(c.dir)
		var names []string
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), TempPrefix) {
				names = append(names, e.Name())
			}
		}
		return names
	}
	if got := temps(); len(got) != 1 {
		t.Fatalf("temporary files %v, want the child's", got)
	}
	// While the child lives, its file stays.
	if _, err := newBlobCache(root, nil); err != nil {
		t.Fatal(err)
	}
	if got := temps(); len(got) != 1 {
		t.Fatalf("a live writer's file was removed: %v", got)
	}
	cmd.Process.Kill()
	cmd.Wait()

	// A live writer in this process, and a file nobody holds (a run that
	// died before it locked, or an older version's leftover).
	live, err := c.newWriter()
	if err != nil {
		t.Fatal(err)
	}
	defer live.abort()
	live.f.Write([]byte("in progress"))
	if err := os.WriteFile(filepath.Join(c.dir, TempPrefix+"orphan"), make([]byte, 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	var progress bytes.Buffer
	if _, err := newBlobCache(root, blob.NewProgress(&progress, false)); err != nil {
		t.Fatal(err)
	}
	if got := temps(); len(got) != 1 || got[0] != filepath.Base(live.f.Name()) {
		t.Errorf("temporary files %v, want only the live writer's %s", got, filepath.Base(live.f.Name()))
	}
	if !strings.Contains(progress.String(), "removed 2 partial download(s)") {
		t.Errorf("progress %q", progress.String())
	}
	// The live writer still commits.
	if err := live.commit(blob.Sha256Of([]byte("in progress"))); err != nil {
		t.Fatalf("commit after a reclaim: %v", err)
	}
}

// shortCache is a blob cache in a directory of its own with a short path
// (socket paths are limited to about 100 bytes), reporting into progress.
func shortCache(t *testing.T) (*blobCache, *bytes.Buffer) {
	t.Helper()
	var progress bytes.Buffer
	c, err := newBlobCache(diskiotest.ShortDir(t), blob.NewProgress(&progress, false))
	if err != nil {
		t.Fatal(err)
	}
	return c, &progress
}
