package diskio

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"github.com/docker2vm/docker2vm/internal/require"
)

// holey returns a file of size bytes with data at each offset (4 KiB of
// 0xAB) and holes elsewhere.
func holey(t *testing.T, size int64, offsets ...int64) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for _, off := range offsets {
		if _, err := f.WriteAt(bytes.Repeat([]byte{0xab}, 4096), off); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// TestNextData: every data byte lies in a reported region, whatever the
// implementation; with SEEK_DATA the holes between them are skipped.
func TestNextData(t *testing.T) {
	const size = 64 << 20
	offs := []int64{0, 8 << 20, 40 << 20, size - 4096}
	f := holey(t, size, offs...)
	var regions [][2]int64
	for off := int64(0); ; {
		data, hole, err := NextData(f, off, size)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if data < off || hole <= data || hole > size {
			t.Fatalf("NextData(%d) = [%d, %d)", off, data, hole)
		}
		regions = append(regions, [2]int64{data, hole})
		off = hole
	}
	for _, o := range offs {
		in := false
		for _, r := range regions {
			in = in || (o >= r[0] && o+4096 <= r[1])
		}
		if !in {
			t.Errorf("data at %d is in no region of %v", o, regions)
		}
	}
	var covered int64
	for _, r := range regions {
		covered += r[1] - r[0]
	}
	switch Impl {
	case "portable":
		if len(regions) != 1 || regions[0] != [2]int64{0, size} {
			t.Errorf("portable NextData: regions %v, want the whole file", regions)
		}
	default:
		// Filesystems report data in their own units, but nowhere near
		// the whole 64 MiB.
		if covered > 16<<20 {
			t.Errorf("%s NextData reports %d bytes of data for 16 KiB written: holes not found (%v)", Impl, covered, regions)
		}
	}
	if _, _, err := NextData(f, size, size); !errors.Is(err, io.EOF) {
		t.Errorf("NextData at the end: err = %v, want io.EOF", err)
	}
	// A limit below the file's size: nothing at or past it.
	if data, hole, err := NextData(f, 9<<20, 20<<20); err == nil {
		if data < 9<<20 || hole > 20<<20 {
			t.Errorf("NextData(9M, limit 20M) = [%d, %d)", data, hole)
		}
		if Impl != "portable" {
			t.Errorf("NextData(9M, limit 20M) = [%d, %d), want io.EOF (no data there)", data, hole)
		}
	}
}

// TestCloneLeavesNothingOnFailure: where a clone is not possible (ext4,
// tmpfs, the portable build), dst does not exist afterwards; where it is,
// dst has src's content.
func TestCloneLeavesNothingOnFailure(t *testing.T) {
	src := holey(t, 1<<20, 4096)
	dst := filepath.Join(t.TempDir(), "clone")
	err := Clone(src, dst)
	if err != nil {
		if _, serr := os.Lstat(dst); !errors.Is(serr, os.ErrNotExist) {
			t.Fatalf("Clone failed (%v) but left %s: %v", err, dst, serr)
		}
		if Impl == "portable" && !errors.Is(err, ErrUnsupported) {
			t.Errorf("portable Clone: err = %v, want ErrUnsupported", err)
		}
		t.Logf("no clone here: %v", err)
		return
	}
	a, _ := os.ReadFile(src.Name())
	b, _ := os.ReadFile(dst)
	if !bytes.Equal(a, b) {
		t.Error("the clone differs from its source")
	}
	// A clone never replaces a file.
	if err := Clone(src, dst); err == nil {
		t.Error("Clone over an existing file succeeded")
	}
}

// TestOpenNoCache: aligned writes through the no-cache file land in the
// file; unaligned ones are refused with NoCacheRefused (Linux) or work.
func TestOpenNoCache(t *testing.T) {
	f := holey(t, 1<<20)
	d, err := OpenNoCache(f)
	if err != nil {
		if Impl == "portable" && errors.Is(err, ErrUnsupported) {
			return
		}
		require.Missing(t, "uncached writes (O_DIRECT) on the test filesystem: %v", err)
	}
	defer d.Close()
	if Impl == "portable" {
		t.Fatal("the portable OpenNoCache returned a file")
	}
	raw := make([]byte, 2*DirectAlign)
	skip := int(-uintptr(unsafe.Pointer(unsafe.SliceData(raw))) & (DirectAlign - 1))
	buf := raw[skip : skip+DirectAlign]
	for i := range buf {
		buf[i] = 0x5a
	}
	if _, err := d.WriteAt(buf, 8192); err != nil {
		if NoCacheRefused(err) {
			require.Missing(t, "the test filesystem refuses uncached writes: %v", err)
		}
		t.Fatal(err)
	}
	got := make([]byte, DirectAlign)
	if _, err := f.ReadAt(got, 8192); err != nil || !bytes.Equal(got, buf) {
		t.Errorf("read back after an uncached write: %v, equal=%v", err, bytes.Equal(got, buf))
	}
}

// TestIdentify: a write changes the identity; the portable build never
// claims to know it.
func TestIdentify(t *testing.T) {
	f := holey(t, 4096, 0)
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	a, ok := Identify(fi)
	if Impl == "portable" {
		if ok {
			t.Error("portable Identify claims an identity")
		}
		return
	}
	if !ok || a.Ino == 0 || a.Nlink != 1 || a.Size != 4096 || a.MtimeNs == 0 || a.CtimeNs == 0 {
		t.Fatalf("Identify = %+v, %v", a, ok)
	}
	time.Sleep(10 * time.Millisecond)
	if _, err := f.WriteAt([]byte{1}, 0); err != nil {
		t.Fatal(err)
	}
	fi, _ = f.Stat()
	if b, _ := Identify(fi); b == a {
		t.Error("a write did not change the identity")
	}
	if err := os.Link(f.Name(), f.Name()+".2"); err != nil {
		t.Fatal(err)
	}
	fi, _ = f.Stat()
	if c, _ := Identify(fi); c.Nlink != 2 {
		t.Errorf("Nlink after a link = %d", c.Nlink)
	}
}

// TestStartWriteback is best effort: it must not fail or change data.
func TestStartWriteback(t *testing.T) {
	f := holey(t, 1<<20, 0, 4096)
	StartWriteback(f, 0, 1<<20)
	got := make([]byte, 4096)
	if _, err := f.ReadAt(got, 4096); err != nil || got[0] != 0xab {
		t.Errorf("after StartWriteback: %v %x", err, got[0])
	}
}

// TestExchange swaps two directories in one step where supported.
func TestExchange(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, d := range []string{a, b} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "name"), []byte(filepath.Base(d)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	err := Exchange(a, b)
	if Impl == "portable" {
		if !errors.Is(err, ErrUnsupported) {
			t.Fatalf("portable Exchange: %v", err)
		}
		return
	}
	if errors.Is(err, ErrUnsupported) {
		require.Missing(t, "the test filesystem cannot exchange names (RENAME_EXCHANGE): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(a, "name")); string(got) != "b" {
		t.Errorf("a holds %q after the exchange", got)
	}
	if got, _ := os.ReadFile(filepath.Join(b, "name")); string(got) != "a" {
		t.Errorf("b holds %q after the exchange", got)
	}
	if err := Exchange(a, filepath.Join(dir, "missing")); err == nil || errors.Is(err, ErrUnsupported) {
		t.Errorf("exchange with a missing entry: %v", err)
	}
}
