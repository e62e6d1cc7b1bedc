package fstree

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/docker2vm/docker2vm/internal/confine"
)

// world is what a test case works on: a tree, a second tree to graft from,
// and a record of released content.
type world struct {
	t, other *Tree
	store    *MemStore
	released []string
	contents map[Content]string
}

func newWorld(t *testing.T) *world {
	return &world{t: New(), other: New(), store: &MemStore{}, contents: map[Content]string{}}
}

func (w *world) release(c Content) {
	w.released = append(w.released, w.contents[c])
	w.store.Release(c)
}

// file returns a detached regular file holding data.
func (w *world) file(tb testing.TB, data string) *Inode {
	c, err := w.store.Put(context.Background(), strings.NewReader(data), int64(len(data)))
	if err != nil {
		tb.Fatal(err)
	}
	w.contents[c] = data
	return &Inode{Type: TypeRegular, Mode: 0o644, Content: c}
}

// dir returns the directory at p in tr, made (with its parents) if missing.
func dir(tr *Tree, p string) *Inode {
	d := tr.Root
	for _, c := range Split(p) {
		n := d.Child(c)
		if n == nil {
			n = NewDir(0o755, 0, 0)
			Link(d, c, n, nil)
		}
		d = n
	}
	return d
}

// at returns the inode at p in tr (nil if none).
func at(tr *Tree, p string) *Inode {
	n, _ := tr.Lookup(p)
	return n
}

// dump lists a tree: one line per entry with its type, link count and,
// for files, content; the root's own link count first.
func dump(tr *Tree) string {
	var b strings.Builder
	fmt.Fprintf(&b, "/ links=%d\n", tr.Root.Links())
	tr.Walk(func(p string, n *Inode) error {
		if p == "" {
			return nil
		}
		fmt.Fprintf(&b, "/%s %s links=%d", p, n.Type, n.Links())
		if n.Content != nil {
			fmt.Fprintf(&b, " %q", Bytes(n.Content))
		}
		if n.Type == TypeSymlink {
			fmt.Fprintf(&b, " -> %s", n.Target)
		}
		b.WriteString("\n")
		return nil
	})
	return b.String()
}

func trim(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n") + "\n"
}

type treeCase struct {
	name     string
	do       func(t *testing.T, w *world) error
	want     string   // dump of w.t
	other    string   // dump of w.other, when set
	released []string // contents released, sorted
	live     int64    // bytes the store still holds
	err      string   // substring of the error do returns
	panics   string   // substring of the panic do raises
}

func treeCases() []treeCase {
	return []treeCase{
		// Link
		{name: "link a new file", do: func(t *testing.T, w *world) error {
			Link(w.t.Root, "f", w.file(t, "x"), w.release)
			return nil
		}, want: `/ links=0
			/f file links=1 "x"`, live: 1},
		{name: "link a hardlink", do: func(t *testing.T, w *world) error {
			f := w.file(t, "x")
			Link(w.t.Root, "a", f, w.release)
			Link(dir(w.t, "d"), "b", f, w.release)
			return nil
		}, want: `/ links=0
			/a file links=2 "x"
			/d dir links=1
			/d/b file links=2 "x"`, live: 1},
		{name: "link the same inode again under its name", do: func(t *testing.T, w *world) error {
			f := w.file(t, "x")
			Link(w.t.Root, "a", f, w.release)
			Link(w.t.Root, "a", f, w.release)
			return nil
		}, want: `/ links=0
			/a file links=1 "x"`, live: 1},
		{name: "link replaces a file and releases it", do: func(t *testing.T, w *world) error {
			Link(w.t.Root, "a", w.file(t, "old"), w.release)
			Link(w.t.Root, "a", w.file(t, "new"), w.release)
			return nil
		}, want: `/ links=0
			/a file links=1 "new"`, released: []string{"old"}, live: 3},
		{name: "link replaces one name of a hardlinked pair", do: func(t *testing.T, w *world) error {
			f := w.file(t, "pair")
			Link(w.t.Root, "a", f, w.release)
			Link(w.t.Root, "b", f, w.release)
			Link(w.t.Root, "b", w.file(t, "new"), w.release)
			return nil
		}, want: `/ links=0
			/a file links=1 "pair"
			/b file links=1 "new"`, live: 7},
		{name: "link replaces a directory subtree", do: func(t *testing.T, w *world) error {
			Link(dir(w.t, "d/e"), "f", w.file(t, "deep"), w.release)
			Link(dir(w.t, "d"), "g", w.file(t, "g"), w.release)
			Link(w.t.Root, "d", w.file(t, "file"), w.release)
			return nil
		}, want: `/ links=0
			/d file links=1 "file"`, released: []string{"deep", "g"}, live: 4},
		{name: "link replaces the directory holding the file's other name", do: func(t *testing.T, w *world) error {
			f := w.file(t, "kept")
			Link(dir(w.t, "d"), "f", f, w.release)
			Link(w.t.Root, "d", f, w.release)
			return nil
		}, want: `/ links=0
			/d file links=1 "kept"`, live: 4},
		{name: "link a directory", do: func(t *testing.T, w *world) error {
			d := NewDir(0o700, 1, 2)
			Link(w.t.Root, "d", d, w.release)
			Link(d, "sub", &Inode{Type: TypeDir}, w.release) // a literal directory takes entries too
			Link(d.Child("sub"), "s", &Inode{Type: TypeSymlink, Target: "/x"}, w.release)
			return nil
		}, want: `/ links=0
			/d dir links=1
			/d/sub dir links=1
			/d/sub/s symlink links=1 -> /x`},
		{name: "link a directory twice panics", do: func(t *testing.T, w *world) error {
			d := dir(w.t, "d")
			Link(w.t.Root, "e", d, w.release)
			return nil
		}, panics: "already has a name"},
		{name: "link a detached directory under its own subtree panics", do: func(t *testing.T, w *world) error {
			d := NewDir(0o755, 0, 0)
			sub := NewDir(0o755, 0, 0)
			Link(d, "sub", sub, nil)
			Link(sub, "up", d, nil)
			return nil
		}, panics: "inside itself"},
		{name: "link into a file panics", do: func(t *testing.T, w *world) error {
			f := w.file(t, "x")
			Link(f, "g", w.file(t, "y"), nil)
			return nil
		}, panics: "into a file"},
		{name: "link a subtree from another tree grafts it", do: func(t *testing.T, w *world) error {
			sub := NewDir(0o755, 0, 0)
			f := w.file(t, "x")
			Link(sub, "a", f, nil)
			Link(sub, "b", f, nil)
			Link(w.t.Root, "sub", sub, nil)
			return nil
		}, want: `/ links=0
			/sub dir links=1
			/sub/a file links=2 "x"
			/sub/b file links=2 "x"`, live: 1},

		// Unlink
		{name: "unlink the last name releases", do: func(t *testing.T, w *world) error {
			Link(w.t.Root, "a", w.file(t, "x"), w.release)
			Unlink(w.t.Root, "a", w.release)
			return nil
		}, want: `/ links=0`, released: []string{"x"}},
		{name: "unlink one hardlink keeps the content", do: func(t *testing.T, w *world) error {
			f := w.file(t, "x")
			Link(w.t.Root, "a", f, w.release)
			Link(w.t.Root, "b", f, w.release)
			Unlink(w.t.Root, "a", w.release)
			return nil
		}, want: `/ links=0
			/b file links=1 "x"`, live: 1},
		{name: "unlink a directory releases what only it held", do: func(t *testing.T, w *world) error {
			out := w.file(t, "shared")
			Link(w.t.Root, "out", out, w.release)
			Link(dir(w.t, "d/e"), "in", out, w.release)
			Link(dir(w.t, "d/e"), "only", w.file(t, "only"), w.release)
			d := at(w.t, "d")
			Unlink(w.t.Root, "d", w.release)
			if d.Links() != 0 || d.NumChildren() != 0 {
				return fmt.Errorf("unlinked directory: links %d, %d entries", d.Links(), d.NumChildren())
			}
			return nil
		}, want: `/ links=0
			/out file links=1 "shared"`, released: []string{"only"}, live: 6},
		{name: "unlink a missing name", do: func(t *testing.T, w *world) error {
			Unlink(w.t.Root, "nothing", w.release)
			return nil
		}, want: `/ links=0`},
		{name: "unlink without a release func drops the content", do: func(t *testing.T, w *world) error {
			f := w.file(t, "x")
			Link(w.t.Root, "a", f, nil)
			Unlink(w.t.Root, "a", nil)
			if f.Content != nil {
				return errors.New("content kept")
			}
			return nil
		}, want: `/ links=0`, live: 1},
		{name: "unlink while iterating", do: func(t *testing.T, w *world) error {
			for _, n := range []string{"a", "b", "c", "d"} {
				Link(w.t.Root, n, w.file(t, n), w.release)
			}
			for name := range w.t.Root.Children() {
				if name != "c" {
					Unlink(w.t.Root, name, w.release)
				}
			}
			return nil
		}, want: `/ links=0
			/c file links=1 "c"`, released: []string{"a", "b", "d"}, live: 1},

		// Detach
		{name: "detach keeps a subtree and its content", do: func(t *testing.T, w *world) error {
			Link(dir(w.t, "d"), "f", w.file(t, "x"), w.release)
			d := Detach(w.t.Root, "d")
			if d == nil || d.Links() != 0 || d.Child("f").Links() != 1 || d.Child("f").Content == nil {
				return errors.New("detached subtree changed")
			}
			Link(w.other.Root, "d", d, w.release)
			return nil
		}, want: `/ links=0`, other: `/ links=0
			/d dir links=1
			/d/f file links=1 "x"`, live: 1},
		{name: "detach the last name of a file keeps its content", do: func(t *testing.T, w *world) error {
			Link(w.t.Root, "f", w.file(t, "x"), w.release)
			f := Detach(w.t.Root, "f")
			if f.Links() != 0 || f.Content == nil {
				return errors.New("detached file changed")
			}
			return nil
		}, want: `/ links=0`, live: 1},
		{name: "detach a missing name", do: func(t *testing.T, w *world) error {
			if Detach(w.t.Root, "nothing") != nil {
				return errors.New("detached something")
			}
			return nil
		}, want: `/ links=0`},

		// Move
		{name: "move renames", do: func(t *testing.T, w *world) error {
			Link(w.t.Root, "a", w.file(t, "x"), w.release)
			return Move(w.t.Root, "a", dir(w.t, "d"), "b", w.release)
		}, want: `/ links=0
			/d dir links=1
			/d/b file links=1 "x"`, live: 1},
		{name: "move a hardlink keeps its count", do: func(t *testing.T, w *world) error {
			f := w.file(t, "x")
			Link(w.t.Root, "a", f, w.release)
			Link(w.t.Root, "b", f, w.release)
			return Move(w.t.Root, "a", w.t.Root, "c", w.release)
		}, want: `/ links=0
			/b file links=2 "x"
			/c file links=2 "x"`, live: 1},
		{name: "move onto its own other name", do: func(t *testing.T, w *world) error {
			f := w.file(t, "x")
			Link(w.t.Root, "a", f, w.release)
			Link(w.t.Root, "b", f, w.release)
			return Move(w.t.Root, "a", w.t.Root, "b", w.release)
		}, want: `/ links=0
			/b file links=1 "x"`, live: 1},
		{name: "move replaces and releases", do: func(t *testing.T, w *world) error {
			Link(w.t.Root, "a", w.file(t, "new"), w.release)
			Link(w.t.Root, "b", w.file(t, "old"), w.release)
			return Move(w.t.Root, "a", w.t.Root, "b", w.release)
		}, want: `/ links=0
			/b file links=1 "new"`, released: []string{"old"}, live: 3},
		{name: "move out of the directory it replaces", do: func(t *testing.T, w *world) error {
			Link(dir(w.t, "d"), "f", w.file(t, "x"), w.release)
			Link(dir(w.t, "d"), "g", w.file(t, "g"), w.release)
			return Move(at(w.t, "d"), "f", w.t.Root, "d", w.release)
		}, want: `/ links=0
			/d file links=1 "x"`, released: []string{"g"}, live: 1},
		{name: "move a directory", do: func(t *testing.T, w *world) error {
			Link(dir(w.t, "a/b"), "f", w.file(t, "x"), w.release)
			return Move(w.t.Root, "a", dir(w.t, "c"), "a2", w.release)
		}, want: `/ links=0
			/c dir links=1
			/c/a2 dir links=1
			/c/a2/b dir links=1
			/c/a2/b/f file links=1 "x"`, live: 1},
		{name: "move a subtree between trees", do: func(t *testing.T, w *world) error {
			Link(dir(w.other, "mods/6.1"), "m.ko", w.file(t, "ko"), w.release)
			return Move(at(w.other, "mods"), "6.1", dir(w.t, "lib/modules"), "6.1", w.release)
		}, want: `/ links=0
			/lib dir links=1
			/lib/modules dir links=1
			/lib/modules/6.1 dir links=1
			/lib/modules/6.1/m.ko file links=1 "ko"`, other: `/ links=0
			/mods dir links=1`, live: 2},
		{name: "move to the same name", do: func(t *testing.T, w *world) error {
			Link(w.t.Root, "a", w.file(t, "x"), w.release)
			return Move(w.t.Root, "a", w.t.Root, "a", w.release)
		}, want: `/ links=0
			/a file links=1 "x"`, live: 1},
		{name: "move a directory into itself", do: func(t *testing.T, w *world) error {
			dir(w.t, "a/b/c")
			return Move(w.t.Root, "a", at(w.t, "a/b"), "a", w.release)
		}, want: `/ links=0
			/a dir links=1
			/a/b dir links=1
			/a/b/c dir links=1`, err: "into itself"},
		{name: "move a missing name", do: func(t *testing.T, w *world) error {
			return Move(w.t.Root, "nothing", w.t.Root, "b", w.release)
		}, want: `/ links=0`, err: "no such entry"},
		{name: "move into a file", do: func(t *testing.T, w *world) error {
			Link(w.t.Root, "a", w.file(t, "a"), w.release)
			Link(w.t.Root, "f", w.file(t, "f"), w.release)
			return Move(w.t.Root, "a", at(w.t, "f"), "a", w.release)
		}, want: `/ links=0
			/a file links=1 "a"
			/f file links=1 "f"`, err: "into a file", live: 2},
	}
}

func TestTreeOps(t *testing.T) {
	for _, tc := range treeCases() {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			var err error
			panicked := ""
			func() {
				defer func() {
					if r := recover(); r != nil {
						panicked = fmt.Sprint(r)
					}
				}()
				err = tc.do(t, w)
			}()
			if tc.panics != "" {
				if !strings.Contains(panicked, tc.panics) {
					t.Fatalf("panic %q, want one containing %q", panicked, tc.panics)
				}
				return
			}
			if panicked != "" {
				t.Fatalf("panic: %s", panicked)
			}
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if got := dump(w.t); got != trim(tc.want) {
				t.Errorf("tree:\n%s\nwant:\n%s", got, trim(tc.want))
			}
			if tc.other != "" {
				if got := dump(w.other); got != trim(tc.other) {
					t.Errorf("other tree:\n%s\nwant:\n%s", got, trim(tc.other))
				}
			}
			slices.Sort(w.released) // a subtree is released in no particular order
			if !slices.Equal(w.released, tc.released) {
				t.Errorf("released %q, want %q", w.released, tc.released)
			}
			if w.store.Live() != tc.live {
				t.Errorf("store holds %d bytes, want %d", w.store.Live(), tc.live)
			}
			checkCounts(t, w.t)
			checkCounts(t, w.other)
		})
	}
}

// checkCounts checks the invariant every operation keeps: a file's link
// count is the number of its names in the tree, a directory has one.
func checkCounts(t *testing.T, tr *Tree) {
	t.Helper()
	names := map[*Inode]uint32{}
	tr.Walk(func(p string, n *Inode) error {
		if p != "" {
			names[n]++
		}
		return nil
	})
	for n, c := range names {
		if n.Links() != c {
			t.Errorf("%s with %d names has link count %d", n.Type, c, n.Links())
		}
	}
}

func TestLookup(t *testing.T) {
	tr := New()
	Link(dir(tr, "a/b"), "f", &Inode{Type: TypeRegular}, nil)
	Link(tr.Root, "l", &Inode{Type: TypeSymlink, Target: "a"}, nil)
	for _, tc := range []struct {
		p    string
		want *Inode
	}{
		{"", tr.Root},
		{".", tr.Root},
		{"/", tr.Root},
		{"a/b/f", at(tr, "a/b/f")},
		{"/a/b/", at(tr, "a/b")},
		{"l", at(tr, "l")},
		{"l/b", nil},     // symlinks are not followed
		{"a/b/f/g", nil}, // a file has no entries
		{"x", nil},
	} {
		n, ok := tr.Lookup(tc.p)
		if n != tc.want || ok != (tc.want != nil) {
			t.Errorf("Lookup(%q) = %v %v", tc.p, n, ok)
		}
	}
}

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		p    string
		want []string
	}{
		{"", nil}, {".", nil}, {"/", nil}, {"a", []string{"a"}}, {"/a/b/", []string{"a", "b"}},
	} {
		if got := Split(tc.p); !slices.Equal(got, tc.want) {
			t.Errorf("Split(%q) = %q", tc.p, got)
		}
	}
}

func TestWalkAndNames(t *testing.T) {
	tr := New()
	for _, p := range []string{"b/y", "b/x", "a", "c/z/deep"} {
		dir(tr, p)
	}
	var seen []string
	tr.Walk(func(p string, n *Inode) error {
		seen = append(seen, p)
		if p == "c" {
			return SkipDir
		}
		return nil
	})
	if want := []string{"", "a", "b", "b/x", "b/y", "c"}; !slices.Equal(seen, want) {
		t.Errorf("Walk visited %q, want %q", seen, want)
	}
	if got := SortedNames(at(tr, "b")); !slices.Equal(got, []string{"x", "y"}) {
		t.Errorf("SortedNames %q", got)
	}
	if n := at(tr, "b").NumChildren(); n != 2 {
		t.Errorf("NumChildren %d", n)
	}
	if err := tr.Walk(func(p string, n *Inode) error { return SkipDir }); err != nil {
		t.Errorf("SkipDir at the root: %v", err)
	}
	for range tr.Root.Children() {
		break // stopping early is fine
	}
	stop := errors.New("stop")
	if err := tr.Walk(func(p string, n *Inode) error {
		if p == "b/x" {
			return stop
		}
		return nil
	}); err != stop {
		t.Errorf("Walk error %v", err)
	}
}

func TestInodeMeta(t *testing.T) {
	n := &Inode{Type: TypeSymlink, Mode: 0o777, UID: 1, GID: 2, Mtime: Timestamp{Sec: 3}, Target: "/t", Major: 4, Minor: 5}
	n.SetXattr("user.b", []byte("2"))
	n.SetXattr("security.a", []byte("1"))
	n.SetXattr("user.b", []byte("3"))
	if v, ok := n.Xattr("user.b"); !ok || string(v) != "3" || len(n.Xattrs) != 2 || n.Xattrs[0].Name != "security.a" {
		t.Errorf("xattrs %v", n.Xattrs)
	}
	if _, ok := n.Xattr("user.none"); ok {
		t.Error("missing xattr found")
	}
	if n.Size() != 2 || n.IsDir() {
		t.Errorf("size %d", n.Size())
	}
	c := n.CopyMeta()
	c.Xattrs[0].Name = "changed"
	if c.Type != n.Type || c.Target != "/t" || c.UID != 1 || c.Major != 4 || c.Mtime.Sec != 3 || n.Xattrs[0].Name != "security.a" || c.Links() != 0 {
		t.Errorf("CopyMeta %+v", c)
	}
	d := NewDir(0o40755, 7, 8)
	if !d.IsDir() || d.Mode != 0o755 || d.UID != 7 || d.Size() != 0 || d.Links() != 0 {
		t.Errorf("NewDir %+v", d)
	}
	if (&Inode{Type: TypeRegular}).Size() != 0 {
		t.Error("empty file size")
	}
	for ty, want := range map[Type]string{TypeRegular: "file", TypeDir: "dir", TypeSymlink: "symlink", TypeCharDev: "chardev",
		TypeBlockDev: "blockdev", TypeFIFO: "fifo", TypeSocket: "socket", Type(99): "type(99)"} {
		if ty.String() != want {
			t.Errorf("%d: %s", ty, ty)
		}
	}
}

func TestMemStore(t *testing.T) {
	s := &MemStore{}
	c, err := s.Put(context.Background(), strings.NewReader("hello"), 5)
	if err != nil || c.Size() != 5 || s.Live() != 5 || string(Bytes(c)) != "hello" {
		t.Fatalf("Put: %v %v", c, err)
	}
	ra, err := s.Open(c)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 5)
	if _, err := ra.ReadAt(b, 0); err != nil && err != io.EOF || !bytes.Equal(b, []byte("hello")) {
		t.Errorf("Open read %q %v", b, err)
	}
	if _, err := s.Put(context.Background(), strings.NewReader("ab"), 5); err == nil {
		t.Error("short Put succeeded")
	}
	s.Release(c)
	s.Release(c) // twice is harmless
	if s.Live() != 0 {
		t.Errorf("live %d after release", s.Live())
	}
	if (&Inode{Type: TypeRegular, Content: c}).Size() != 5 {
		t.Error("file size")
	}
	if _, err := s.Open(c); err == nil {
		t.Error("released content opened")
	}
	type other struct{ Content }
	if _, err := s.Open(other{}); err == nil || Bytes(other{}) != nil {
		t.Error("foreign content opened")
	}
}

// TestEntries: a Tree as confine.Resolve walks it (the rules themselves
// are confine's, tested there).
func TestEntries(t *testing.T) {
	tr := New()
	f := &Inode{Type: TypeFIFO}
	Link(dir(tr, "usr/lib"), "p", f, nil)
	Link(tr.Root, "lib", &Inode{Type: TypeSymlink, Target: "../usr/lib"}, nil)
	r, err := confine.Resolve(Entries{}, tr.Root, "/lib/p", confine.Options{Path: true})
	if err != nil || r.Node != f || r.Parent != at(tr, "usr/lib") || r.Path != "/usr/lib/p" || r.Kind != confine.Other {
		t.Errorf("%+v %v", r, err)
	}
	if _, err := confine.Resolve(Entries{}, tr.Root, "/lib/p/x", confine.Options{}); err == nil || !strings.Contains(err.Error(), `"/usr/lib/p" is a fifo, not a directory`) {
		t.Errorf("through a fifo: %v", err)
	}
	if _, err := confine.Resolve(Entries{}, tr.Root, "/new/x", confine.Options{Create: true}); err == nil || !strings.Contains(err.Error(), `cannot make "/new"`) {
		t.Errorf("Mkdir: %v", err)
	}
	for ty, want := range map[Type]confine.Kind{TypeDir: confine.Dir, TypeSymlink: confine.Symlink, TypeRegular: confine.Other, TypeCharDev: confine.Other} {
		if ty.Kind() != want {
			t.Errorf("%s: kind %d", ty, ty.Kind())
		}
	}
}
