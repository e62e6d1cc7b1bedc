package rootfs

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/docker2vm/docker2vm/fstree"
	"github.com/docker2vm/docker2vm/internal/testtar"
)

// rawHeader builds a tar header block by hand, for formats archive/tar reads
// but cannot write (old GNU sparse, GNU.sparse PAX records), which
// internal/testtar cannot write either. typ 'S' makes
// an old-GNU sparse header with the fragments frags and real size realSize.
func rawHeader(name string, typ byte, size int64, realSize int64, frags [][2]int64) []byte {
	b := make([]byte, 512)
	num := func(off, n int, v int64) {
		if v >= 1<<(3*(n-1)) { // base-256
			b[off] = 0x80
			for i := off + n - 1; i > off; i-- {
				b[i] = byte(v)
				v >>= 8
			}
			return
		}
		copy(b[off:off+n], fmt.Sprintf("%0*o\x00", n-1, v))
	}
	copy(b[0:100], name)
	num(100, 8, 0o644)
	num(108, 8, 0)
	num(116, 8, 0)
	num(124, 12, size)
	num(136, 12, defaultMtime.Unix())
	b[156] = typ
	copy(b[257:265], "ustar\x0000")
	if typ == 'S' {
		copy(b[257:265], "ustar  \x00")
		for i, f := range frags {
			num(386+i*24, 12, f[0])
			num(386+i*24+12, 12, f[1])
		}
		num(483, 12, realSize)
	}
	copy(b[148:156], "        ")
	var sum int64
	for _, c := range b {
		sum += int64(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

// paxRecords encodes PAX records ("len key=value\n").
func paxRecords(kv ...string) []byte {
	var out []byte
	for i := 0; i < len(kv); i += 2 {
		rec := " " + kv[i] + "=" + kv[i+1] + "\n"
		n := len(rec)
		for len(fmt.Sprint(n+len(fmt.Sprint(n)))) != len(fmt.Sprint(n)) {
			n++
		}
		n += len(fmt.Sprint(n))
		out = append(out, fmt.Sprint(n)+rec...)
	}
	return out
}

func pad512(b []byte) []byte {
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b
}

// TestSparse: GNU sparse files (old GNU and PAX 1.0 formats) come out as
// regular files whose holes read as zeros.
func TestSparse(t *testing.T) {
	const size = 16384
	want := make([]byte, size)
	copy(want, "hello")
	copy(want[12288:], "world")
	sum := sha256.Sum256(want)
	wantLine := fmt.Sprintf("/sparse file 0644 0:0 size=%d sha256=%s\n", size, hex.EncodeToString(sum[:6]))
	// checkSparse merges raw and expects the one sparse file, whole.
	checkSparse := func(t *testing.T, raw []byte) {
		t.Helper()
		m, st, err := merge(t, Limits{}, raw)
		if err != nil {
			t.Fatal(err)
		}
		if got := dump(m.Tree()); got != wantLine {
			t.Errorf("got %s want %s", got, wantLine)
		}
		checkInvariants(t, m.Tree(), st)
	}

	t.Run("old gnu", func(t *testing.T) {
		var raw []byte
		raw = append(raw, rawHeader("sparse", 'S', 10, size, [][2]int64{{0, 5}, {12288, 5}})...)
		raw = append(raw, pad512([]byte("helloworld"))...)
		raw = append(raw, make([]byte, 1024)...)
		checkSparse(t, raw)
	})
	t.Run("pax 1.0", func(t *testing.T) {
		sparseMap := pad512([]byte("2\n0\n5\n12288\n5\n"))
		data := append(sparseMap, "helloworld"...)
		recs := paxRecords("GNU.sparse.major", "1", "GNU.sparse.minor", "0", "GNU.sparse.name", "sparse", "GNU.sparse.realsize", fmt.Sprint(size))
		var raw []byte
		raw = append(raw, rawHeader("PaxHeaders/sparse", 'x', int64(len(recs)), 0, nil)...)
		raw = append(raw, pad512(recs)...)
		raw = append(raw, rawHeader("GNUSparseFile.0/sparse", '0', int64(len(data)), 0, nil)...)
		raw = append(raw, pad512(data)...)
		raw = append(raw, make([]byte, 1024)...)
		checkSparse(t, raw)
	})
	t.Run("sparse size counts against the bytes limit", func(t *testing.T) {
		var raw []byte
		raw = append(raw, rawHeader("sparse", 'S', 5, 1<<40, [][2]int64{{0, 5}})...)
		raw = append(raw, pad512([]byte("hello"))...)
		raw = append(raw, make([]byte, 1024)...)
		st := &discardStore{}
		err := New(st, Limits{}).Apply(context.Background(), "layer 1", bytes.NewReader(raw))
		if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "--max-bytes") {
			t.Fatalf("want a --max-bytes limit error, got %v", err)
		}
	})
}

// TestHugeFile streams a file over 4 GiB from a generator through the merge
// into a store that counts and discards: nothing holds the data.
func TestHugeFile(t *testing.T) {
	const size = 4<<30 + 4096
	marker := []byte("END-MARKER-01234")
	pr, pw := io.Pipe()
	// Written by hand, not with internal/testtar: the 4 GiB are generated
	// as they stream, never held in memory.
	go func() {
		tw := tar.NewWriter(pw)
		err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "big", Mode: 0o644, Size: size, ModTime: defaultMtime})
		if err == nil {
			_, err = io.Copy(tw, io.MultiReader(&zeroReader{n: size - int64(len(marker))}, bytes.NewReader(marker)))
		}
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	st := &discardStore{}
	m := New(st, Limits{})
	if err := m.Apply(context.Background(), "huge", pr); err != nil {
		t.Fatal(err)
	}
	if got := dump(m.Tree()); !strings.HasPrefix(got, "/big file 0644 0:0 ") {
		t.Fatalf("tree: %s", got)
	}
	n, _ := m.Tree().Lookup("big")
	if n.Size() != size || st.bytes != size || !bytes.Equal(st.tail, marker) {
		t.Errorf("size %d, stored %d bytes ending %q; want %d ending %q", n.Size(), st.bytes, st.tail, int64(size), marker)
	}
	if s := m.Stats(); s.Bytes != size || s.Entries != 1 {
		t.Errorf("stats %+v", s)
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// TestGzipBomb: a small gzip stream claiming a 1 TiB file is stopped by the
// bytes limit at the header, before the data is decompressed.
func TestGzipBomb(t *testing.T) {
	// Written by hand, not with internal/testtar: the tar is cut off after
	// 8 MiB of the 1 TiB its header announces.
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bomb", Mode: 0o644, Size: 1 << 40, ModTime: defaultMtime}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(tw, &zeroReader{n: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	zw.Close() // the tar stays unfinished: the rest would be 1 TiB of zeros
	t.Logf("bomb: %d bytes of gzip", gz.Len())

	zr, err := gzip.NewReader(&gz)
	if err != nil {
		t.Fatal(err)
	}
	cr := &countingReader{r: zr}
	st := &discardStore{}
	err = New(st, Limits{}).Apply(context.Background(), "layer 4/4 sha256:bomb", cr)
	want := `layer 4/4 sha256:bomb: entry "bomb": total uncompressed size exceeds the limit of 68719476736 bytes (64.0 GiB) (raise it with --max-bytes if the image is trusted; an image that expands this much may be a decompression bomb)`
	if err == nil || err.Error() != want {
		t.Fatalf("got error\n%v\nwant\n%s", err, want)
	}
	if !errors.Is(err, ErrLimit) {
		t.Errorf("error does not wrap ErrLimit")
	}
	if cr.n > 64<<10 || st.bytes != 0 {
		t.Errorf("read %d decompressed bytes and stored %d before stopping", cr.n, st.bytes)
	}

	// Many entries each under the limit: the running total stops them.
	var many bytes.Buffer
	zw = gzip.NewWriter(&many)
	mib := make([]byte, 1<<20)
	var files []ent
	for i := range 64 {
		files = append(files, testtar.FileBytes(fmt.Sprint("f", i), mib))
	}
	if err := testtar.Write(zw, files...); err != nil {
		t.Fatal(err)
	}
	zw.Close()
	zr, _ = gzip.NewReader(&many)
	err = New(&discardStore{}, Limits{MaxBytes: 8 << 20}).Apply(context.Background(), "layer 1", zr)
	if err == nil || !strings.Contains(err.Error(), `entry "f8": total uncompressed size exceeds the limit of 8388608 bytes (8.0 MiB)`) {
		t.Fatalf("got %v", err)
	}
}

func TestContextCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := New(&fstree.MemStore{}, Limits{}).Apply(ctx, "layer 3", bytes.NewReader(testtar.Build(t, F("a", "x"))))
	if !errors.Is(err, context.Canceled) || !strings.HasPrefix(err.Error(), "layer 3: ") {
		t.Fatalf("got %v", err)
	}

	// Cancelled between entries: the reader cancels once the first entry's
	// data has been read.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	raw := testtar.Build(t, F("a", strings.Repeat("x", 4096)), F("b", "y"))
	r := &cancelAfter{r: bytes.NewReader(raw), n: 2048, cancel: cancel}
	m := New(&fstree.MemStore{}, Limits{})
	err = m.Apply(ctx, "layer 1", r)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
	if _, ok := m.Tree().Lookup("b"); ok {
		t.Errorf("entry after cancellation was applied")
	}
}

type cancelAfter struct {
	r      io.Reader
	n      int
	cancel func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	if len(p) > 512 {
		p = p[:512]
	}
	n, err := c.r.Read(p)
	c.n -= n
	if c.n <= 0 {
		c.cancel()
	}
	return n, err
}

func TestBrokenStreams(t *testing.T) {
	raw := testtar.Build(t, F("a", strings.Repeat("x", 2000)), F("b", "y"))
	for _, tc := range []struct {
		name string
		data []byte
		err  string
	}{
		{"truncated in data", raw[:1000], `layer 1: entry "a": storing 2000 bytes of file data: reading 2000 bytes of file data (got 488): unexpected EOF`},
		{"truncated in header", raw[:2560+100], `layer 1: reading the tar stream after entry "a": unexpected EOF (the layer is truncated or not a tar archive: the image is malformed or hostile)`},
		{"not a tar", bytes.Repeat([]byte("garbage!"), 128), `layer 1: reading the tar stream at its start: archive/tar: invalid tar header`},
		{"empty", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := merge(t, Limits{}, tc.data)
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.err) {
				t.Fatalf("got %v\nwant prefix %s", err, tc.err)
			}
		})
	}
}

// TestStats checks the counters.
func TestStats(t *testing.T) {
	m, _, err := merge(t, Limits{},
		testtar.Build(t, D("a"), F("a/f", "12345"), S("s", "a"), F("x/y/z", "1")),
		testtar.Build(t, W("s"), Opq("a"), L("h", "x/y/z"), D("./"), F(".wh..wh.aufs", "")))
	if err != nil {
		t.Fatal(err)
	}
	want := Stats{Layers: 2, Entries: 9, Bytes: 6, MetaBytes: 1, Whiteouts: 1, Opaques: 1, Hardlinks: 1, ImplicitDirs: 2, Ignored: 2}
	if got := m.Stats(); got != want {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}
