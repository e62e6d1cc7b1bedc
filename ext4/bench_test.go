package ext4

import (
	"context"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/docker2vm/docker2vm/fstree"
)

// patternReader cycles through 1 MiB of random non-zero bytes: cheap to
// produce, and zero blocks would become holes and flatter the numbers.
type patternReader struct {
	buf []byte
	off int
}

func newPatternReader() *patternReader {
	b := make([]byte, 1<<20)
	rand.New(rand.NewSource(1)).Read(b)
	for i := range b {
		b[i] |= 1
	}
	return &patternReader{buf: b}
}

func (r *patternReader) Read(p []byte) (int, error) {
	n := copy(p, r.buf[r.off:])
	r.off = (r.off + n) % len(r.buf)
	return n, nil
}

func benchWrite(b *testing.B, files int, size int64) {
	b.SetBytes(int64(files) * size)
	src := newPatternReader()
	dir := b.TempDir()
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		f, err := os.Create(filepath.Join(dir, "img"))
		if err != nil {
			b.Fatal(err)
		}
		w, err := NewWriter(f, Options{})
		if err != nil {
			b.Fatal(err)
		}
		tr := fstree.New()
		d := tr.Root
		for j := 0; j < files; j++ {
			if j%1000 == 0 {
				d = fstree.NewDir(0o755, 0, 0)
				fstree.Link(tr.Root, fmt.Sprintf("d%d", j/1000), d, nil)
			}
			c, err := w.Put(ctx, io.LimitReader(src, size), size)
			if err != nil {
				b.Fatal(err)
			}
			fstree.Link(d, fmt.Sprintf("file-%d", j), &fstree.Inode{Type: fstree.TypeRegular, Mode: 0o644, Content: c}, nil)
		}
		if err := w.Finish(ctx, tr); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
	b.ReportMetric(float64(files)*float64(b.N)/b.Elapsed().Seconds(), "files/s")
}

func BenchmarkWriterLargeFile(b *testing.B)  { benchWrite(b, 1, 256<<20) }
func BenchmarkWriterSmallFiles(b *testing.B) { benchWrite(b, 20000, 4096) }
func BenchmarkWriterMixed(b *testing.B)      { benchWrite(b, 2000, 64<<10) }
