package rootfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"testing"
	"unicode"

	"github.com/docker2vm/docker2vm/fstree"
	"github.com/docker2vm/docker2vm/internal/testtar"
)

// The entries of the table tests' layers, built by internal/testtar,
// under short names.
type ent = testtar.Entry

var (
	F   = testtar.File     // a regular file, 0644
	D   = testtar.Dir      // a directory, 0755
	S   = testtar.Symlink  // a symlink name -> target
	L   = testtar.Hardlink // a hardlink name -> target
	W   = testtar.Whiteout // ".wh." + the last component of name
	Opq = testtar.Opaque   // the opaque marker in dir
	Dev = testtar.Device   // a character (c) or block (b) device, or a fifo (p)
)

// defaultMtime is the mtime of every test entry unless set otherwise; the
// dump leaves it out.
var defaultMtime = testtar.Mtime

// merge applies the layers into a fresh MemStore-backed Merger.
func merge(t testing.TB, lim Limits, layers ...[]byte) (*Merger, *fstree.MemStore, error) {
	t.Helper()
	st := &fstree.MemStore{}
	m := New(st, lim)
	for i, l := range layers {
		if err := m.Apply(context.Background(), fmt.Sprintf("layer %d", i+1), bytes.NewReader(l)); err != nil {
			return m, st, err
		}
	}
	return m, st, nil
}

// resumeAt merges the first k layers, encodes the tree, and applies the
// others with a Merger resumed from the decoded tree, its contents in a
// store of its own.
func resumeAt(t testing.TB, lim Limits, k int, layers ...[]byte) *Merger {
	t.Helper()
	m, st, err := merge(t, lim, layers[:k]...)
	if err != nil {
		t.Fatal(err)
	}
	var enc bytes.Buffer
	if err := fstree.Encode(&enc, m.Tree(), func(c fstree.Content) ([]byte, error) { return fstree.Bytes(c), nil }); err != nil {
		t.Fatal(err)
	}
	st2 := &fstree.MemStore{}
	tree, err := fstree.Decode(&enc, func(b []byte) (fstree.Content, error) {
		return st2.Put(context.Background(), bytes.NewReader(b), int64(len(b)))
	})
	if err != nil {
		t.Fatal(err)
	}
	if st.Live() != st2.Live() {
		t.Fatalf("the decoded tree holds %d bytes, the merged one %d", st2.Live(), st.Live())
	}
	r := Resume(st2, lim, tree, m.Stats())
	for i := k; i < len(layers); i++ {
		if err := r.Apply(context.Background(), fmt.Sprintf("layer %d", i+1), bytes.NewReader(layers[i])); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// dump lists a tree canonically, one line per entry (the root left out):
//
//	path type mode uid:gid [details]
//
// details: file data (quoted if short and printable, else size and sha256
// prefix), "-> target" for symlinks, "major:minor" for devices, "ino=N" for
// inodes with several links (numbered in walk order), xattrs and any mtime
// other than defaultMtime.
func dump(t *fstree.Tree) string { return dumpTree(t, true) }

// dumpTree is dump, with directory mtimes left out unless dirMtimes.
func dumpTree(t *fstree.Tree, dirMtimes bool) string {
	var b strings.Builder
	inos := map[*fstree.Inode]int{}
	t.Walk(func(p string, n *fstree.Inode) error {
		if p == "" {
			return nil
		}
		fmt.Fprintf(&b, "/%s %s %04o %d:%d", p, n.Type, n.Mode, n.UID, n.GID)
		switch n.Type {
		case fstree.TypeRegular:
			var data []byte
			if n.Content != nil {
				data = fstree.Bytes(n.Content)
			}
			b.WriteString(" " + dataString(data))
		case fstree.TypeSymlink:
			fmt.Fprintf(&b, " -> %q", n.Target)
		case fstree.TypeCharDev, fstree.TypeBlockDev:
			fmt.Fprintf(&b, " %d:%d", n.Major, n.Minor)
		}
		if n.Type != fstree.TypeDir && n.Links() > 1 {
			if _, ok := inos[n]; !ok {
				inos[n] = len(inos) + 1
			}
			fmt.Fprintf(&b, " ino=%d", inos[n])
		}
		for _, x := range n.Xattrs {
			fmt.Fprintf(&b, " xattr:%s=%q", x.Name, x.Value)
		}
		if n.Mtime != (fstree.Timestamp{Sec: defaultMtime.Unix()}) && (dirMtimes || n.Type != fstree.TypeDir) {
			fmt.Fprintf(&b, " mtime=%d.%09d", n.Mtime.Sec, n.Mtime.Nsec)
		}
		b.WriteString("\n")
		return nil
	})
	return b.String()
}

func dataString(data []byte) string {
	printable := len(data) <= 40
	for _, r := range string(data) {
		if !unicode.IsPrint(r) {
			printable = false
		}
	}
	if printable {
		return fmt.Sprintf("%q", data)
	}
	sum := sha256.Sum256(data)
	return fmt.Sprintf("size=%d sha256=%s", len(data), hex.EncodeToString(sum[:6]))
}

// checkInvariants checks what must hold for every merged tree: link counts
// of files match the names in the tree, and the store
// holds exactly the content the tree references (released content really
// released).
func checkInvariants(t testing.TB, tree *fstree.Tree, st *fstree.MemStore) {
	t.Helper()
	names := map[*fstree.Inode]uint32{}
	var live int64
	tree.Walk(func(p string, n *fstree.Inode) error {
		if n.Type == fstree.TypeDir {
			return nil
		}
		if names[n] == 0 && n.Content != nil {
			live += n.Content.Size()
		}
		names[n]++
		return nil
	})
	for n, c := range names {
		if n.Links() != c {
			t.Errorf("inode %p (%s): Links=%d but %d names in the tree", n, n.Type, n.Links(), c)
		}
	}
	if st != nil && st.Live() != live {
		t.Errorf("store holds %d live bytes, tree references %d", st.Live(), live)
	}
}

// lines trims a raw-string listing for comparison.
func lines(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		return ""
	}
	return strings.Join(out, "\n") + "\n"
}

// zeroReader yields n zero bytes without holding them.
type zeroReader struct{ n int64 }

func (z *zeroReader) Read(p []byte) (int, error) {
	if z.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > z.n {
		p = p[:z.n]
	}
	clear(p)
	z.n -= int64(len(p))
	return len(p), nil
}

// discardStore counts and discards file data.
type discardStore struct {
	puts  int64
	bytes int64
	tail  []byte // the last bytes of the last file
}

type sizeContent int64

func (s sizeContent) Size() int64 { return int64(s) }

func (s *discardStore) Put(ctx context.Context, r io.Reader, size int64) (fstree.Content, error) {
	tail := &tailWriter{}
	n, err := io.CopyN(tail, r, size)
	s.bytes += n
	if err != nil {
		return nil, err
	}
	s.puts++
	s.tail = tail.b
	return sizeContent(size), nil
}

func (s *discardStore) Release(fstree.Content) {}

type tailWriter struct{ b []byte }

func (w *tailWriter) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) > 16 {
		p = p[len(p)-16:]
	}
	w.b = append(w.b, p...)
	if len(w.b) > 16 {
		w.b = append(w.b[:0], w.b[len(w.b)-16:]...)
	}
	return n, nil
}
