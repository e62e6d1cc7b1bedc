package sparse

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/docker2vm/docker2vm/internal/diskio"
)

// sparseFile creates path as size bytes of holes with data written at each
// offset (cut at the end of the file), and returns it open.
func sparseFile(t *testing.T, path string, size int64, data []byte, offsets ...int64) *os.File {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for _, off := range offsets {
		if _, err := f.WriteAt(data[:min(int64(len(data)), size-off)], off); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// TestSparseCopyKeepsHoles copies a sparse file: equal content, holes kept
// (and all-zero data blocks turned into holes), and the digest depends on
// the content only.
func TestSparseCopyKeepsHoles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	const size = 200<<20 + 1234                   // several regions, an unaligned tail
	blob := bytes.Repeat([]byte("data!"), 100000) // ~488 KiB
	src := sparseFile(t, filepath.Join(dir, "src"), size, blob, 0, 5000, 70<<20, 128<<20-100, size-1000)
	defer src.Close()
	// A block of explicit zeros, allocated but not data.
	if _, err := src.WriteAt(make([]byte, 1<<20), 150<<20); err != nil {
		t.Fatal(err)
	}
	if err := src.Sync(); err != nil {
		t.Fatal(err)
	}
	d1, err := Copy(ctx, filepath.Join(dir, "dst"), src, size, true)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := os.OpenFile(filepath.Join(dir, "dst"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	a, _ := os.ReadFile(src.Name())
	b, _ := os.ReadFile(dst.Name())
	if !bytes.Equal(a, b) {
		t.Fatal("the copy differs")
	}
	var ss, ds syscall.Stat_t
	syscall.Fstat(int(src.Fd()), &ss)
	syscall.Fstat(int(dst.Fd()), &ds)
	t.Logf("st_blocks: source %d, copy %d (apparent size %d blocks)", ss.Blocks, ds.Blocks, size/512)
	if ds.Blocks > ss.Blocks || ds.Blocks*512 > 8<<20 {
		t.Errorf("the copy is not sparse: %d blocks, source %d", ds.Blocks, ss.Blocks)
	}
	d2, err := Digest(ctx, dst, size)
	if err != nil {
		t.Fatal(err)
	}
	if d1 != d2 {
		t.Errorf("digest of the copy %s != digest while copying %s", d2, d1)
	}
	// Any changed byte changes the digest, in data or in a hole.
	for _, off := range []int64{5001, 100 << 20, size - 1} {
		old := make([]byte, 1)
		dst.ReadAt(old, off)
		dst.WriteAt([]byte{old[0] ^ 1}, off)
		d3, err := Digest(ctx, dst, size)
		if err != nil {
			t.Fatal(err)
		}
		if d3 == d1 {
			t.Errorf("flipping byte %d did not change the digest", off)
		}
		dst.WriteAt(old, off)
	}
	if d4, _ := Digest(ctx, dst, size); d4 != d1 {
		t.Errorf("digest after restoring: %s, want %s", d4, d1)
	}
}

// TestSparseCopyWriteFailure: a copy whose writes fail returns the write
// error (and does not hang with buffers still queued). Not durable: a
// durable copy reopens dst to bypass the page cache, which a read-only
// descriptor does not prevent.
func TestSparseCopyWriteFailure(t *testing.T) {
	dir := t.TempDir()
	const size = 300 << 20
	var offs []int64
	for off := int64(0); off < size; off += 40 << 20 {
		offs = append(offs, off)
	}
	src := sparseFile(t, filepath.Join(dir, "src"), size, bytes.Repeat([]byte{7}, 8<<20), offs...)
	defer src.Close()
	if err := os.WriteFile(filepath.Join(dir, "dst"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	dst, err := os.Open(filepath.Join(dir, "dst")) // read-only: every write fails
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	done := make(chan error, 1)
	go func() {
		_, err := digest(context.Background(), src, dst, size, false)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !errors.Is(err, syscall.EBADF) {
			t.Fatalf("err = %v, want the write's EBADF", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("digest hung after a failed write")
	}
}

// TestDigestIgnoresLayout: the digest of a file is the same whether its
// zeros are holes or written blocks, and whether it is read through
// SEEK_DATA or whole (the portable fallback reads every block).
func TestDigestIgnoresLayout(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	const size = 70<<20 + 100
	blob := bytes.Repeat([]byte{1, 2, 3}, 40000)
	holes := sparseFile(t, filepath.Join(dir, "holes"), size, blob, 4096, 65<<20, size-50)
	defer holes.Close()
	full := make([]byte, size)
	for _, off := range []int64{4096, 65 << 20, size - 50} {
		copy(full[off:], blob[:min(int64(len(blob)), size-off)])
	}
	if err := os.WriteFile(filepath.Join(dir, "full"), full, 0o644); err != nil {
		t.Fatal(err)
	}
	dense, err := os.Open(filepath.Join(dir, "full"))
	if err != nil {
		t.Fatal(err)
	}
	defer dense.Close()
	a, err := Digest(ctx, holes, size)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Digest(ctx, dense, size)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Errorf("digest with holes %s != digest with written zeros %s", a, b)
	}
	// Shorter: another digest.
	if c, _ := Digest(ctx, dense, size-4096); c == a {
		t.Error("the size is not part of the digest")
	}
	t.Logf("diskio implementation: %s", diskio.Impl)
}

// TestCopyEmptyAndTiny: files without data, and shorter than a block.
func TestCopyEmptyAndTiny(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		size int64
		data []byte
	}{
		{"empty", 0, nil},
		{"holes only", 10 << 20, nil},
		{"one byte", 1, []byte{9}},
		{"unaligned", 5000, bytes.Repeat([]byte{5}, 5000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var offs []int64
			if tc.data != nil {
				offs = []int64{0}
			}
			src := sparseFile(t, filepath.Join(dir, "src"), tc.size, tc.data, offs...)
			defer src.Close()
			sum, err := Copy(ctx, filepath.Join(dir, "dst"), src, tc.size, false)
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(filepath.Join(dir, "dst"))
			if err != nil {
				t.Fatal(err)
			}
			want, _ := os.ReadFile(src.Name())
			if !bytes.Equal(got, want) {
				t.Fatalf("copy of %d bytes differs", tc.size)
			}
			if again, _ := Digest(ctx, src, tc.size); again != sum {
				t.Errorf("digest of the source %s != digest of the copy %s", again, sum)
			}
		})
	}
}

// TestCopyRefusesExisting: Copy never writes over a file.
func TestCopyRefusesExisting(t *testing.T) {
	dir := t.TempDir()
	src := sparseFile(t, filepath.Join(dir, "src"), 8192, []byte("x"), 0)
	defer src.Close()
	dst := filepath.Join(dir, "dst")
	if err := os.WriteFile(dst, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Copy(context.Background(), dst, src, 8192, true); !errors.Is(err, os.ErrExist) {
		t.Fatalf("Copy over an existing file: err = %v, want ErrExist", err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "keep me" {
		t.Errorf("the existing file was changed: %q", b)
	}
}

// TestCopyCancelled: a cancelled context stops the copy and removes dst.
func TestCopyCancelled(t *testing.T) {
	dir := t.TempDir()
	src := sparseFile(t, filepath.Join(dir, "src"), 300<<20, bytes.Repeat([]byte{3}, 1<<20), 0, 100<<20, 200<<20)
	defer src.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dst := filepath.Join(dir, "dst")
	if _, err := Copy(ctx, dst, src, 300<<20, true); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dst left behind after a failed copy: %v", err)
	}
}

// TestDataRuns: the non-zero blocks, merged, whatever the layout.
func TestDataRuns(t *testing.T) {
	dir := t.TempDir()
	const size = 10<<20 + 100
	blob := bytes.Repeat([]byte{7}, 3*Block)
	f := sparseFile(t, filepath.Join(dir, "f"), size, blob, 0, 5*Block, 6*Block, 8<<20, size-50)
	defer f.Close()
	// Explicit zeros inside data: not a run.
	if _, err := f.WriteAt(make([]byte, Block), Block); err != nil {
		t.Fatal(err)
	}
	runs, err := DataRuns(context.Background(), f, size)
	if err != nil {
		t.Fatal(err)
	}
	want := []Run{{0, Block}, {2 * Block, Block}, {5 * Block, 4 * Block}, {8 << 20, 3 * Block}, {size - 50 - (size-50)%Block, size - (size - 50 - (size-50)%Block)}}
	if len(runs) != len(want) {
		t.Fatalf("runs %v, want %v", runs, want)
	}
	for i := range want {
		if runs[i] != want[i] {
			t.Errorf("run %d = %v, want %v", i, runs[i], want[i])
		}
	}
}
