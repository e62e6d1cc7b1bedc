package ext4

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker2vm/docker2vm/fstree"
	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/sparse"
)

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

const sde = 1700000000

func ts(sec int64, nsec uint32) fstree.Timestamp { return fstree.Timestamp{Sec: sec, Nsec: nsec} }

// file makes a regular file inode with content stored in s.
func file(t testing.TB, s fstree.Store, data []byte, mode uint32) *fstree.Inode {
	n := &fstree.Inode{Type: fstree.TypeRegular, Mode: mode, Mtime: ts(sde, 123456789), Atime: ts(sde, 5), Ctime: ts(sde+1, 999999999)}
	if data != nil {
		n.Content = putBytes(t, s, data)
	}
	return n
}

// holeyReader yields size bytes: data blocks alternating with holes.
type holeyReader struct {
	off, size int64
	period    int64 // data for the first half of each period
}

func (h *holeyReader) Read(p []byte) (int, error) {
	if h.off >= h.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), h.size-h.off))
	for i := 0; i < n; i++ {
		o := h.off + int64(i)
		if o%h.period < h.period/2 {
			p[i] = byte(o/h.period) | 1
		} else {
			p[i] = 0
		}
	}
	h.off += int64(n)
	return n, nil
}

// kindsTree holds every inode kind and the awkward cases.
func kindsTree(t testing.TB, s fstree.Store) *fstree.Tree {
	tr := fstree.New()
	tr.Root.Mtime, tr.Root.Atime, tr.Root.Ctime = ts(sde, 1), ts(sde, 2), ts(sde, 3)
	add(tr, "etc/hello", file(t, s, []byte("hello world\n"), 0o644))
	add(tr, "empty", file(t, s, nil, 0o600))
	add(tr, "empty-put", file(t, s, []byte{}, 0o600))
	add(tr, "zeros", file(t, s, make([]byte, 3*blockSize+100), 0o644))
	partial := bytes.Repeat([]byte("x"), 2*blockSize+17)
	clear(partial[blockSize : 2*blockSize])
	add(tr, "partial-hole", file(t, s, partial, 0o644))
	big := make([]byte, 3<<20)
	for i := range big {
		big[i] = byte(i * 7 / 3)
	}
	bigf := add(tr, "usr/lib/big", file(t, s, big, 0o755))
	// the same content handle in a second, distinct inode gets its own copy
	add(tr, "usr/lib/big-copy", &fstree.Inode{Type: fstree.TypeRegular, Mode: 0o644, Content: bigf.Content})
	add(tr, "bin/sh", &fstree.Inode{Type: fstree.TypeSymlink, Mode: 0o777, Target: "busybox", Mtime: ts(sde, 0)})
	add(tr, "slow", &fstree.Inode{Type: fstree.TypeSymlink, Mode: 0o777, Target: strings.Repeat("long/", 40) + "end"})
	add(tr, "exact59", &fstree.Inode{Type: fstree.TypeSymlink, Mode: 0o777, Target: strings.Repeat("a", 59)})
	add(tr, "exact60", &fstree.Inode{Type: fstree.TypeSymlink, Mode: 0o777, Target: strings.Repeat("b", 60)})
	add(tr, "maxlink", &fstree.Inode{Type: fstree.TypeSymlink, Mode: 0o777, Target: strings.Repeat("c/", 2000) + "d"})
	h := file(t, s, []byte("linked"), 0o640)
	add(tr, "a/h1", h)
	add(tr, "b/h2", h)
	add(tr, "b/h3", h)
	add(tr, "dev/null", &fstree.Inode{Type: fstree.TypeCharDev, Mode: 0o666, Major: 1, Minor: 3})
	add(tr, "dev/sda", &fstree.Inode{Type: fstree.TypeBlockDev, Mode: 0o660, GID: 6, Major: 8, Minor: 0})
	add(tr, "dev/bigdev", &fstree.Inode{Type: fstree.TypeCharDev, Mode: 0o600, Major: 300, Minor: 70000})
	add(tr, "dev/fifo", &fstree.Inode{Type: fstree.TypeFIFO, Mode: 0o644})
	add(tr, "run/sock", &fstree.Inode{Type: fstree.TypeSocket, Mode: 0o755})
	owned := file(t, s, []byte("owned"), 0o4755)
	owned.UID, owned.GID = 100000, 200000
	add(tr, "owned", owned)
	add(tr, "setgid", file(t, s, []byte("g"), 0o2755))
	tmp := add(tr, "tmp", fstree.NewDir(0o1777, 0, 0))
	tmp.Mtime = ts(-1000, 42)             // before 1970
	add(tr, "future", file(t, s, nil, 0)) // mode 0
	tr.Root.Child("future").Mtime = ts(1<<32+5, 7)
	tr.Root.Child("future").Atime = ts(1<<33+1, 8)

	// xattrs: in the inode, in a block, shared blocks
	ping := file(t, s, []byte("ping"), 0o755)
	ping.SetXattr("security.capability", []byte{0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	add(tr, "bin/ping", ping)
	x := file(t, s, []byte("x"), 0o644)
	x.SetXattr("user.small", []byte("v"))
	x.SetXattr("trusted.t", []byte("trust"))
	x.SetXattr("user.empty", nil)
	add(tr, "x/small", x)
	acl := fstree.NewDir(0o770, 0, 0)
	// user::rwx user:1000:r-x group::rwx mask::rwx other::---
	acl.SetXattr("system.posix_acl_access", aclV2(t, [][3]uint32{{1, 7, 0xffffffff}, {2, 5, 1000}, {4, 7, 0xffffffff}, {0x10, 7, 0xffffffff}, {0x20, 0, 0xffffffff}}))
	acl.SetXattr("system.posix_acl_default", aclV2(t, [][3]uint32{{1, 7, 0xffffffff}, {4, 5, 0xffffffff}, {8, 5, 2000}, {0x10, 5, 0xffffffff}, {0x20, 0, 0xffffffff}}))
	add(tr, "x/acl", acl)
	for i := 0; i < 3; i++ {
		b := file(t, s, []byte{byte(i)}, 0o644)
		b.SetXattr("user.big", bytes.Repeat([]byte("B"), 1500))
		b.SetXattr("user.another", bytes.Repeat([]byte("C"), 700))
		b.SetXattr("security.selinux", []byte("system_u:object_r:bin_t:s0\x00"))
		add(tr, fmt.Sprintf("x/shared%d", i), b)
	}
	lone := file(t, s, []byte("lone"), 0o644)
	lone.SetXattr("user.big", bytes.Repeat([]byte("D"), 3000))
	add(tr, "x/lone", lone)
	dx := fstree.NewDir(0o755, 0, 0)
	dx.SetXattr("user.dir", []byte("on a dir"))
	add(tr, "x/dir", dx)
	sl := &fstree.Inode{Type: fstree.TypeSymlink, Mode: 0o777, Target: "small"}
	sl.SetXattr("trusted.onlink", []byte("yes"))
	add(tr, "x/link", sl)

	// deep nesting
	p := "deep"
	for i := 0; i < 200; i++ {
		p += "/d"
	}
	add(tr, p+"/leaf", file(t, s, []byte("deep"), 0o644))
	// a directory of a few blocks (small htree)
	for i := 0; i < 500; i++ {
		add(tr, fmt.Sprintf("mid/entry-with-a-longish-name-%04d", i), &fstree.Inode{Type: fstree.TypeFIFO, Mode: 0o600})
	}
	// fragments: thousands of extents (tree of depth 2)
	c, err := s.Put(context.Background(), &holeyReader{size: 6000 * 2 * blockSize, period: 2 * blockSize}, 6000*2*blockSize)
	if err != nil {
		t.Fatal(err)
	}
	add(tr, "frag", &fstree.Inode{Type: fstree.TypeRegular, Mode: 0o644, Content: c})
	return tr
}

func aclV2(t testing.TB, ents [][3]uint32) []byte {
	b := le.AppendUint32(nil, 2)
	for _, e := range ents {
		b = le.AppendUint16(b, uint16(e[0]))
		b = le.AppendUint16(b, uint16(e[1]))
		b = le.AppendUint32(b, e[2])
	}
	return b
}

func buildWith(t testing.TB, opts Options, mk func(testing.TB, fstree.Store) *fstree.Tree) (string, *fstree.Tree, *hashingStore) {
	var tr *fstree.Tree
	var hs *hashingStore
	img := writeImage(t, opts, func(w *Writer) *fstree.Tree {
		hs = newHashingStore(w)
		tr = mk(t, hs)
		return tr
	})
	return img, tr, hs
}

func TestWriterKinds(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"journal", Options{SourceDateEpoch: sde}},
		{"nojournal", Options{SourceDateEpoch: sde, NoJournal: true, Label: "x"}},
		{"fixed-size", Options{SourceDateEpoch: sde, Size: 300 << 20}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, tr, hs := buildWith(t, tc.opts, kindsTree)
			fsck(t, img)
			dir := mountImage(t, img, false)
			compareMounted(t, dir, tr, hs)
		})
	}
}

func TestWriterSparseOutput(t *testing.T) {
	img, _, _ := buildWith(t, Options{SourceDateEpoch: sde}, kindsTree)
	st, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	var used int64
	if out, err := exec.Command("du", "-B1", img).Output(); err == nil {
		fmt.Sscan(string(out), &used)
	}
	t.Logf("apparent %d MiB, on disk %.1f MiB", st.Size()>>20, float64(used)/(1<<20))
	if used > 80<<20 {
		t.Errorf("image uses %d bytes on disk: zero blocks were written", used)
	}
}

func TestWriterDeterministic(t *testing.T) {
	// The sparse digest (the data blocks, their offsets and the size), not
	// a sha256 of the whole apparent size: the same proof without hashing
	// hundreds of MB of holes (minutes under qemu-user, in the arm64 tier).
	sum := func() string {
		img, _, _ := buildWith(t, Options{SourceDateEpoch: sde}, kindsTree)
		f, err := os.Open(img)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		d, err := sparse.Digest(context.Background(), f, fi.Size())
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if a, b := sum(), sum(); a != b {
		t.Fatal("two runs gave different images")
	}
}

func TestWriterSizeTooSmall(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// fails in Finish: metadata does not fit
	w, err := NewWriter(f, Options{Size: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	tr := fstree.New()
	add(tr, "f", file(t, w, bytes.Repeat([]byte("a"), 4<<20), 0o644))
	err = w.Finish(context.Background(), tr)
	if err == nil || !strings.Contains(err.Error(), "but --size is 8388608; raise --size or omit it") {
		t.Fatalf("got %v", err)
	}
	// fails in Put: data does not fit
	w, err = NewWriter(f, Options{Size: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	_, err = w.Put(context.Background(), bytes.NewReader(bytes.Repeat([]byte("a"), 9<<20)), 9<<20)
	if err == nil || !strings.Contains(err.Error(), "raise --size or omit it") {
		t.Fatalf("got %v", err)
	}
}

func TestWriterReleaseReuse(t *testing.T) {
	var hs *hashingStore
	var tr *fstree.Tree
	var w0 *Writer
	img := writeImage(t, Options{SourceDateEpoch: sde}, func(w *Writer) *fstree.Tree {
		w0 = w
		hs = newHashingStore(w)
		tr = fstree.New()
		old := file(t, hs, bytes.Repeat([]byte("old!"), 100*blockSize/4), 0o644)
		add(tr, "f", old)
		keep := file(t, hs, []byte("keep"), 0o644)
		add(tr, "keep", keep)
		before := w.alloc.next
		fstree.Unlink(tr.Root, "f", w.Release)
		add(tr, "g", file(t, hs, bytes.Repeat([]byte("new?"), 60*blockSize/4), 0o644))
		add(tr, "h", file(t, hs, bytes.Repeat([]byte("new!"), 60*blockSize/4), 0o644))
		if grown := w.alloc.next - before; grown != 20 {
			t.Errorf("fresh blocks used after release: %d, want 20", grown)
		}
		w.Release(keep) // released twice below: ignored
		fstree.Unlink(tr.Root, "keep", w.Release)
		return tr
	})
	_ = w0
	fsck(t, img)
	compareMounted(t, mountImage(t, img, false), tr, hs)
}

func TestWriterForeignContent(t *testing.T) {
	mem := &fstree.MemStore{}
	hs := newHashingStore(mem)
	tr := fstree.New()
	add(tr, "m", file(t, hs, []byte("from memory"), 0o644))
	add(tr, "m2", file(t, hs, bytes.Repeat([]byte{0}, 9000), 0o644))
	img := writeImage(t, Options{SourceDateEpoch: sde, Source: mem}, func(w *Writer) *fstree.Tree { return tr })
	fsck(t, img)
	compareMounted(t, mountImage(t, img, false), tr, hs)

	f, _ := os.Create(filepath.Join(t.TempDir(), "img"))
	defer f.Close()
	w, _ := NewWriter(f, Options{})
	if err := w.Finish(context.Background(), tr); err == nil || !strings.Contains(err.Error(), "ext4: m: content") {
		t.Fatalf("foreign content without Source: %v", err)
	}
}

func TestWriterRemountRW(t *testing.T) {
	img, _, _ := buildWith(t, Options{SourceDateEpoch: sde}, kindsTree)
	dir := mountImage(t, img, true)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(dir, "newfile"), bytes.Repeat([]byte("n"), 5<<20), 0o644))
	must(os.Mkdir(filepath.Join(dir, "newdir"), 0o755))
	for i := 0; i < 300; i++ {
		must(os.WriteFile(filepath.Join(dir, "mid", fmt.Sprintf("added-%d", i)), []byte("a"), 0o644))
	}
	must(os.Remove(filepath.Join(dir, "usr/lib/big")))
	must(os.Remove(filepath.Join(dir, "x/shared1")))
	must(os.Remove(filepath.Join(dir, "b/h2")))
	must(os.RemoveAll(filepath.Join(dir, "deep")))
	must(os.WriteFile(filepath.Join(dir, "etc/hello"), []byte("changed"), 0o644))
	must(os.Rename(filepath.Join(dir, "frag"), filepath.Join(dir, "tmp/frag")))
	umount(t, dir)
	fsck(t, img)
	// our reader follows what the kernel wrote (split htree, new extents)
	fsys := openImage(t, img)
	if ents, err := fsys.ReadDir("mid"); err != nil || len(ents) != 800 {
		t.Fatalf("mid after remount: %d entries, %v", len(ents), err)
	}
	if r, err := fsys.Open("newfile"); err != nil || r.Size() != 5<<20 {
		t.Fatalf("newfile: %v", err)
	} else if b, _ := io.ReadAll(r); !bytes.Equal(b, bytes.Repeat([]byte("n"), 5<<20)) {
		t.Fatal("newfile content differs")
	}
	if _, err := fsys.Lookup("deep"); !errorsIs(err, ErrNotExist) {
		t.Fatalf("deep after removal: %v", err)
	}
	dir = mountImage(t, img, false)
	if b, err := os.ReadFile(filepath.Join(dir, "etc/hello")); err != nil || string(b) != "changed" {
		t.Fatalf("after remount: %q %v", b, err)
	}
}

// zeroReader yields zeros, with a marker at given offsets.
type markedZeros struct {
	off, size int64
	marks     map[int64]byte
}

func (m *markedZeros) Read(p []byte) (int, error) {
	if m.off >= m.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), m.size-m.off))
	clear(p[:n])
	for o, b := range m.marks {
		if o >= m.off && o < m.off+int64(n) {
			p[o-m.off] = b
		}
	}
	m.off += int64(n)
	return n, nil
}

func TestWriterHeavy(t *testing.T) {
	require.Integration(t, "heavy: a 100,000-entry directory and a 5 GiB sparse file")
	img, tr, hs := buildWith(t, Options{SourceDateEpoch: sde}, func(t testing.TB, s fstree.Store) *fstree.Tree {
		tr := fstree.New()
		d := add(tr, "huge", fstree.NewDir(0o755, 0, 0))
		for i := 0; i < 100000; i++ {
			fstree.Link(d, fmt.Sprintf("file-%06d.txt", i), &fstree.Inode{Type: fstree.TypeRegular, Mode: 0o644}, nil)
		}
		// 70,000 subdirectories: more than the 65,000 link limit (dir_nlink)
		many := add(tr, "many", fstree.NewDir(0o755, 0, 0))
		for i := 0; i < 66000; i++ {
			fstree.Link(many, fmt.Sprintf("d%d", i), fstree.NewDir(0o755, 0, 0), nil)
		}
		const size = 5<<30 + 12345
		c, err := s.Put(context.Background(), &markedZeros{size: size, marks: map[int64]byte{0: 1, 3 << 30: 2, 4<<30 + 7: 3, size - 1: 4}}, size)
		if err != nil {
			t.Fatal(err)
		}
		add(tr, "sparse", &fstree.Inode{Type: fstree.TypeRegular, Mode: 0o644, Content: c})
		return tr
	})
	fsck(t, img)
	dir := mountImage(t, img, false)
	compareMounted(t, dir, tr, hs)
	// lookups go through the htree
	for _, name := range []string{"file-000000.txt", "file-054321.txt", "file-099999.txt"} {
		if _, err := os.Lstat(filepath.Join(dir, "huge", name)); err != nil {
			t.Error(err)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "huge", "file-100000.txt")); !os.IsNotExist(err) {
		t.Errorf("missing name: %v", err)
	}
}

func TestDxHashMatchesDebugfs(t *testing.T) {
	debugfs := require.Tool(t, "debugfs")
	seed := [4]uint32{0x12345678, 0x9abcdef0, 0x0fedcba9, 0x87654321}
	seedStr := "78563412-f0de-bc9a-a9cb-ed0f21436587"
	names := []string{"a", "hello", "file-000123.txt", strings.Repeat("long", 20), "caf\xc3\xa9-\xff\x80", strings.Repeat("x", 255)}
	for _, alg := range []struct {
		name string
		ver  uint8
	}{{"half_md4", hashHalfMD4}, {"tea", hashTea}, {"legacy", hashLegacy}} {
		for _, unsigned := range []bool{false, true} {
			for _, name := range names {
				args := []string{"-R", fmt.Sprintf("dx_hash -h %s -s %s %s", alg.name, seedStr, name)}
				if unsigned {
					// debugfs takes the numeric version for the unsigned variants
					args[1] = fmt.Sprintf("dx_hash -h %d -s %s %s", alg.ver+hashUnsigned, seedStr, name)
				}
				ver := alg.ver
				if unsigned {
					ver += hashUnsigned
				}
				h, m := dxHash([]byte(name), ver, seed)
				out, err := exec.Command(debugfs, append(args, "/dev/null")...).CombinedOutput()
				if err != nil {
					t.Fatalf("debugfs: %v %s", err, out)
				}
				want := fmt.Sprintf("Hash of %s is 0x%x (minor 0x%x)", name, h, m)
				if !strings.Contains(string(out), want) {
					t.Errorf("%s unsigned=%v %q: got %q, want %q", alg.name, unsigned, name, out, want)
				}
			}
		}
	}
}

func TestWriterSizes(t *testing.T) {
	small := func(t testing.TB, s fstree.Store) *fstree.Tree {
		tr := fstree.New()
		add(tr, "etc/os-release", file(t, s, []byte("ID=test\n"), 0o644))
		add(tr, "bin/x", file(t, s, bytes.Repeat([]byte("x"), 100000), 0o755))
		return tr
	}
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"1MiB-nojournal", Options{Size: 1 << 20, NoJournal: true, InodeRatio: 1 << 20}},
		{"tiny-last-group", Options{Size: 128<<20 + 8192}},
		{"3-groups", Options{Size: 384 << 20, JournalSize: 4 << 20}},
		{"headroom", Options{Headroom: 1 << 20}},
		{"uuid", Options{UUID: &[16]byte{1, 2, 3}, Label: "sixteen-chars-ok"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, tr, hs := buildWith(t, tc.opts, small)
			fsck(t, img)
			if st, _ := os.Stat(img); tc.opts.Size > 0 && st.Size() != tc.opts.Size {
				t.Errorf("image is %d bytes, want %d", st.Size(), tc.opts.Size)
			}
			fsys := openImage(t, img)
			if tc.opts.UUID != nil && fsys.UUID() != *tc.opts.UUID {
				t.Errorf("uuid %x", fsys.UUID())
			}
			compareMounted(t, mountImage(t, img, false), tr, hs)
		})
	}
}

// TestWriterWritebackKeepsData writes well past writebackChunk several
// times over, in large files and in many small ones gathered into large
// writes, so that writeback runs on its own goroutine while data is still
// being written; every byte must read back, and no writeback may still be
// running once Finish returns.
func TestWriterWritebackKeepsData(t *testing.T) {
	src := newPatternReader()
	want := map[string][]byte{}
	img := writeImage(t, Options{SourceDateEpoch: sde}, func(w *Writer) *fstree.Tree {
		tr := fstree.New()
		for i, size := range []int{40 << 20, 3<<20 + 17, 70 << 20} {
			b := make([]byte, size)
			io.ReadFull(src, b)
			p := fmt.Sprintf("big/%d", i)
			want[p] = b
			add(tr, p, file(t, w, b, 0o644))
		}
		for i := range 9000 {
			b := make([]byte, 1+i%8000)
			io.ReadFull(src, b)
			p := fmt.Sprintf("small/%d/%d", i/1000, i)
			want[p] = b
			add(tr, p, file(t, w, b, 0o600))
		}
		t.Cleanup(func() {
			if w.wbBusy.Load() {
				t.Error("writeback still running after Finish")
			}
		})
		return tr
	})
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	fsys, err := Open(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	for p, b := range want {
		r, err := fsys.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("%s: %d bytes read back (err %v), want %d matching bytes", p, len(got), err, len(b))
		}
	}
	fsck(t, img)
}
