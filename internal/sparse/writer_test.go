package sparse

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestWriter: a stream copied through a Writer, in chunks of any size,
// reads back byte for byte, and its all-zero blocks take no space.
func TestWriter(t *testing.T) {
	const size = 64*Block + 123
	src := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 1))
	data := 0
	for b := 0; b*Block < size; b++ {
		if b%4 == 1 || b == 63 { // a block in four, and the partial tail
			end := min((b+1)*Block, size)
			for i := b * Block; i < end; i++ {
				src[i] = byte(rng.Uint32()) | 1
			}
			data++
		}
	}
	src[size-1] = 0
	for _, chunk := range []int{1, 100, Block - 1, Block, 3*Block + 7, size} {
		path := filepath.Join(t.TempDir(), "out")
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		w := NewWriter(f)
		for r := bytes.NewReader(src); ; {
			buf := make([]byte, chunk)
			n, err := r.Read(buf)
			if n > 0 {
				if m, werr := w.Write(buf[:n]); werr != nil || m != n {
					t.Fatalf("chunk %d: wrote %d of %d: %v", chunk, m, n, werr)
				}
			}
			if err == io.EOF {
				break
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, src) {
			t.Fatalf("chunk %d: read back %d bytes (%v), differ from the source", chunk, len(got), err)
		}
		fi, _ := os.Stat(path)
		if alloc := blocks(fi); alloc > int64(data+4)*Block { // (a little slack for filesystems that preallocate)
			t.Errorf("chunk %d: %d bytes allocated for %d data blocks", chunk, alloc, data)
		}
	}
	// A stream of zeros only: a hole of its size.
	path := filepath.Join(t.TempDir(), "zeros")
	f, _ := os.Create(path)
	w := NewWriter(f)
	w.Write(make([]byte, 10*Block))
	w.Close()
	f.Close()
	if fi, _ := os.Stat(path); fi.Size() != 10*Block || blocks(fi) != 0 {
		t.Errorf("zeros: size %d, %d allocated", fi.Size(), blocks(fi))
	}
}

// blocks is what fi's file takes on disk, as the system says (not
// diskio.Allocated, which a portable build cannot answer).
func blocks(fi os.FileInfo) int64 { return fi.Sys().(*syscall.Stat_t).Blocks * 512 }
