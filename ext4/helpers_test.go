package ext4

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker2vm/docker2vm/fstree"
	"github.com/docker2vm/docker2vm/internal/require"
)

// needRoot skips (or fails under CI) when loop mounts are impossible.
func needRoot(t testing.TB) {
	t.Helper()
	require.Root(t, "for loop mounts")
	require.Tools(t, "mount", "mount", "umount")
}

// fsck runs e2fsck -fn and fails on any reported problem.
func fsck(t testing.TB, img string) {
	t.Helper()
	e2fsck := require.Tool(t, "e2fsck")
	out, err := exec.Command(e2fsck, "-fn", img).CombinedOutput()
	if err != nil {
		t.Fatalf("e2fsck -fn %s: %v\n%s", img, err, out)
	}
}

// putBytes stores data through the writer.
func putBytes(t testing.TB, w fstree.Store, data []byte) fstree.Content {
	t.Helper()
	c, err := w.Put(context.Background(), bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// writeImage creates an image in a temp dir from a tree that build fills
// through the writer.
func writeImage(t testing.TB, opts Options, build func(w *Writer) *fstree.Tree) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "rootfs.ext4")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := NewWriter(f, opts)
	if err != nil {
		t.Fatal(err)
	}
	tree := build(w)
	if err := w.Finish(context.Background(), tree); err != nil {
		t.Fatal(err)
	}
	return img
}

// mkdirAll returns the directory at p, creating it.
func mkdirAll(tr *fstree.Tree, p string) *fstree.Inode {
	n := tr.Root
	for _, name := range fstree.Split(p) {
		c := n.Child(name)
		if c == nil {
			c = fstree.NewDir(0o755, 0, 0)
			fstree.Link(n, name, c, nil)
		}
		n = c
	}
	return n
}

// add links n at path p (parents created).
func add(tr *fstree.Tree, p string, n *fstree.Inode) *fstree.Inode {
	dir, name := filepath.Split(p)
	fstree.Link(mkdirAll(tr, strings.TrimSuffix(dir, "/")), name, n, nil)
	return n
}

// hashingStore wraps a Store and remembers the sha256 of every stream it
// was given, so tests can check content independently of the image layout.
type hashingStore struct {
	fstree.Store
	sums map[fstree.Content][32]byte
}

func newHashingStore(s fstree.Store) *hashingStore {
	return &hashingStore{Store: s, sums: map[fstree.Content][32]byte{}}
}

func (h *hashingStore) Put(ctx context.Context, r io.Reader, size int64) (fstree.Content, error) {
	sh := sha256.New()
	c, err := h.Store.Put(ctx, io.TeeReader(r, sh), size)
	if err != nil {
		return nil, err
	}
	var sum [32]byte
	sh.Sum(sum[:0])
	h.sums[c] = sum
	return c, nil
}

func slicesDelete(s []string, v string) []string {
	out := s[:0:0]
	for _, x := range s {
		if x != v {
			out = append(out, x)
		}
	}
	return out
}
