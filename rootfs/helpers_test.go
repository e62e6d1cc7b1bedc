package rootfs

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/docker2vm/docker2vm/fstree"
)

// defaultMtime is the mtime of every test entry unless set otherwise; the
// dump leaves it out.
var defaultMtime = time.Unix(1700000000, 0)

// ent is one tar entry of a test layer.
type ent struct {
	h    tar.Header
	data []byte
}

func hdr(typ byte, name string, mode int64) ent {
	return ent{h: tar.Header{Typeflag: typ, Name: name, Mode: mode, ModTime: defaultMtime, Format: tar.FormatPAX}}
}

// F is a regular file (0644).
func F(name, data string) ent {
	e := hdr(tar.TypeReg, name, 0o644)
	e.data = []byte(data)
	e.h.Size = int64(len(data))
	return e
}

// D is a directory (0755).
func D(name string) ent { return hdr(tar.TypeDir, name, 0o755) }

// S is a symlink name -> target.
func S(name, target string) ent {
	e := hdr(tar.TypeSymlink, name, 0o777)
	e.h.Linkname = target
	return e
}

// L is a hardlink name -> target.
func L(name, target string) ent {
	e := hdr(tar.TypeLink, name, 0o644)
	e.h.Linkname = target
	return e
}

// W whites out name (the last component gets the .wh. prefix).
func W(name string) ent {
	i := strings.LastIndex(name, "/")
	return F(name[:i+1]+".wh."+name[i+1:], "")
}

// Opq is an opaque marker in dir.
func Opq(dir string) ent { return F(strings.TrimSuffix(dir, "/")+"/.wh..wh..opq", "") }

// Dev is a character (c) or block (b) device, or a fifo (p).
func Dev(kind byte, name string, major, minor int64) ent {
	typ := map[byte]byte{'c': tar.TypeChar, 'b': tar.TypeBlock, 'p': tar.TypeFifo}[kind]
	e := hdr(typ, name, 0o666)
	e.h.Devmajor, e.h.Devminor = major, minor
	return e
}

func (e ent) mode(m int64) ent        { e.h.Mode = m; return e }
func (e ent) own(uid, gid int) ent    { e.h.Uid, e.h.Gid = uid, gid; return e }
func (e ent) names(u, g string) ent   { e.h.Uname, e.h.Gname = u, g; return e }
func (e ent) format(f tar.Format) ent { e.h.Format = f; return e }
func (e ent) mtime(sec, nsec int64) ent {
	e.h.ModTime = time.Unix(sec, nsec)
	return e
}
func (e ent) x(name, value string) ent {
	recs := map[string]string{}
	for k, v := range e.h.PAXRecords {
		recs[k] = v
	}
	recs[paxSchilyXattr+name] = value
	e.h.PAXRecords = recs
	return e
}
func (e ent) pax(k, v string) ent {
	recs := map[string]string{}
	for k, v := range e.h.PAXRecords {
		recs[k] = v
	}
	recs[k] = v
	e.h.PAXRecords = recs
	return e
}

// tarOf builds a layer tar from entries.
func tarOf(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := e.h
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("building test tar: %q: %v", e.h.Name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatalf("building test tar: %q: %v", e.h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// merge applies the layers into a fresh MemStore-backed Merger.
func merge(t testing.TB, lim Limits, layers ...[]byte) (*Merger, *fstree.MemStore, error) {
	t.Helper()
	st := &fstree.MemStore{}
	m := New(st, lim)
	for i, l := range layers {
		if err := m.Apply(context.Background(), i, fmt.Sprintf("test%d", i), bytes.NewReader(l)); err != nil {
			return m, st, err
		}
	}
	return m, st, nil
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
