package fstree

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// fullDump is dump with every field the codec keeps, and which entries
// name the same inode.
func fullDump(tr *Tree) string {
	var b strings.Builder
	ids := map[*Inode]int{}
	tr.Walk(func(p string, n *Inode) error {
		id, ok := ids[n]
		if !ok {
			id = len(ids)
			ids[n] = id
		}
		fmt.Fprintf(&b, "/%s #%d %s %o %d:%d %v %v %v links=%d gen=%d %q %d,%d %v", p, id, n.Type, n.Mode, n.UID, n.GID,
			n.Mtime, n.Atime, n.Ctime, n.Links(), n.Gen, n.Target, n.Major, n.Minor, n.Xattrs)
		if n.Content != nil {
			fmt.Fprintf(&b, " %q", Bytes(n.Content))
		}
		b.WriteString("\n")
		return nil
	})
	return b.String()
}

func memCodec(s *MemStore) (func(Content) ([]byte, error), func([]byte) (Content, error)) {
	return func(c Content) ([]byte, error) { return Bytes(c), nil },
		func(b []byte) (Content, error) {
			return s.Put(context.Background(), bytes.NewReader(b), int64(len(b)))
		}
}

// TestCodec: every tree the operations' cases leave, and one with every
// kind of inode and field, decodes to the tree encoded: fields, contents,
// hardlinks (one inode, several names) and link counts.
func TestCodec(t *testing.T) {
	full := func() *Tree {
		w := newWorld(t)
		d := dir(w.t, "etc/ssl")
		d.Mode, d.UID, d.GID, d.Gen = 0o1777, 1000, 50, 3
		d.Mtime = Timestamp{Sec: -5, Nsec: 999_999_999}
		f := w.file(t, "data\x00with zero")
		f.Mode, f.Atime, f.Ctime = 0o4755, Timestamp{Sec: 1 << 40}, Timestamp{Sec: 7, Nsec: 1}
		f.SetXattr("security.capability", []byte{1, 2, 3})
		f.SetXattr("user.empty", nil)
		Link(d, "file", f, nil)
		Link(w.t.Root, "hard", f, nil)
		Link(dir(w.t, "x"), "hard2", f, nil)
		Link(d, "empty", &Inode{Type: TypeRegular, Mode: 0o600}, nil)
		Link(w.t.Root, "link", &Inode{Type: TypeSymlink, Mode: 0o777, Target: "../etc/ssl/file"}, nil)
		Link(w.t.Root, "null", &Inode{Type: TypeCharDev, Mode: 0o666, Major: 1, Minor: 3}, nil)
		Link(w.t.Root, "sda", &Inode{Type: TypeBlockDev, Major: 8}, nil)
		Link(w.t.Root, "fifo", &Inode{Type: TypeFIFO}, nil)
		Link(w.t.Root, "sock", &Inode{Type: TypeSocket}, nil)
		Link(w.t.Root, "name with\nnewline and ünïcode", &Inode{Type: TypeFIFO}, nil)
		return w.t
	}
	trees := map[string]*Tree{"every field": full(), "empty": New()}
	for _, tc := range treeCases() {
		if tc.panics != "" || tc.err != "" {
			continue
		}
		w := newWorld(t)
		if err := tc.do(t, w); err != nil {
			t.Fatal(err)
		}
		trees[tc.name] = w.t
	}
	for name, tr := range trees {
		t.Run(name, func(t *testing.T) {
			store := &MemStore{}
			enc, dec := memCodec(store)
			var buf bytes.Buffer
			if err := Encode(&buf, tr, enc); err != nil {
				t.Fatal(err)
			}
			got, err := Decode(bytes.NewReader(buf.Bytes()), dec)
			if err != nil {
				t.Fatal(err)
			}
			if a, b := fullDump(tr), fullDump(got); a != b {
				t.Errorf("decoded:\n%s\nencoded:\n%s", b, a)
			}
			checkCounts(t, got)
			var again bytes.Buffer
			if err := Encode(&again, got, enc); err != nil || !bytes.Equal(again.Bytes(), buf.Bytes()) {
				t.Errorf("encoding the decoded tree gives other bytes (%v)", err)
			}
		})
	}
}

// TestCodecDamaged: a damaged encoding is an ErrCodec error, never a
// panic or a tree: truncated anywhere, a byte changed in the header, and
// hand-made encodings the encoder never writes.
func TestCodecDamaged(t *testing.T) {
	w := newWorld(t)
	Link(dir(w.t, "a/b"), "f", w.file(t, "x"), nil)
	Link(w.t.Root, "h", at(w.t, "a/b/f"), nil)
	_, dec := memCodec(&MemStore{})
	enc, _ := memCodec(w.store)
	var buf bytes.Buffer
	if err := Encode(&buf, w.t, enc); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	for n := 0; n < len(good); n++ {
		if _, err := Decode(bytes.NewReader(good[:n]), dec); !errors.Is(err, ErrCodec) {
			t.Fatalf("truncated to %d of %d bytes: %v", n, len(good), err)
		}
	}
	if _, err := Decode(bytes.NewReader(append(append([]byte{}, good...), 0)), dec); !errors.Is(err, ErrCodec) {
		t.Errorf("trailing byte: %v", err)
	}
	hdr := []byte(codecMagic)
	// A directory with every field zero, up to its entries' count.
	root := func(rest ...byte) []byte {
		return append(append(append([]byte{}, hdr...), byte(TypeDir), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), rest...)
	}
	if tr, err := Decode(bytes.NewReader(root(0)), dec); err != nil || tr.Root.NumChildren() != 0 {
		t.Fatalf("the empty root: %v", err)
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"other header", append([]byte("d2v-fstree-9\n"), good[len(codecMagic):]...), "no header"},
		{"type 0", append(hdr, 0), "0 is no type"},
		{"root not a directory", append(append([]byte{}, hdr...), byte(TypeRegular), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), "the root is a file"},
		{"entry named ..", root(1, 2, '.', '.', 0), `".." is not a valid entry name`},
		{"name with a slash", root(1, 3, 'a', '/', 'b', 0), `"a/b" is not a valid entry name`},
		{"names out of order", root(2, 1, 'b', 0, byte(TypeFIFO), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 'a'), `"a" is not a valid entry name`},
		{"link to nothing", root(1, 1, 'a', 2), "link: 2 is out of range"},
		{"directory with two names", root(1, 1, 'a', 1, byte(TypeDir), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), "a directory has one name"},
		{"huge string", append(append([]byte{}, hdr...), byte(TypeDir), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f), "symlink target: 4294967295 is out of range"},
	} {
		if tr, err := Decode(bytes.NewReader(tc.b), dec); !errors.Is(err, ErrCodec) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, %v; want an error containing %q", tc.name, tr, err, tc.want)
		}
	}
}

// FuzzDecode: whatever the bytes, Decode returns a tree whose link counts
// hold, or an ErrCodec error; never a panic.
func FuzzDecode(f *testing.F) {
	w := newWorld(&testing.T{})
	Link(dir(w.t, "a/b"), "f", w.file(f, "x"), nil)
	Link(w.t.Root, "h", at(w.t, "a/b/f"), nil)
	Link(w.t.Root, "s", &Inode{Type: TypeSymlink, Target: "a"}, nil)
	enc, _ := memCodec(w.store)
	var buf bytes.Buffer
	if err := Encode(&buf, w.t, enc); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte(codecMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, dec := memCodec(&MemStore{})
		tr, err := Decode(bytes.NewReader(b), dec)
		if err != nil {
			if !errors.Is(err, ErrCodec) {
				t.Fatalf("error not ErrCodec: %v", err)
			}
			return
		}
		checkCounts(t, tr)
	})
}
