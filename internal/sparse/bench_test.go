package sparse

import (
	"context"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkCopy times what a result-cache hit spends on the
// data: the verified, synced sparse copy of a cached rootfs.ext4. The source looks like a converted image: 256 MiB of
// non-zero data in runs of 4 KiB to 1 MiB between holes, in a 1 GiB file.
// Set DOCKER2VM_BENCH_ROOTFS to copy a real image instead.
func BenchmarkCopy(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	srcPath := os.Getenv("DOCKER2VM_BENCH_ROOTFS")
	if srcPath == "" {
		srcPath = filepath.Join(dir, "src")
		f, err := os.Create(srcPath)
		if err != nil {
			b.Fatal(err)
		}
		const size = 1 << 30
		if err := f.Truncate(size); err != nil {
			b.Fatal(err)
		}
		rng := rand.New(rand.NewSource(1))
		buf := make([]byte, 1<<20)
		rng.Read(buf)
		for off, data := int64(0), int64(0); data < 256<<20 && off < size; {
			n := int64(4096 << rng.Intn(9))
			if _, err := f.WriteAt(buf[:n], off); err != nil {
				b.Fatal(err)
			}
			data += n
			off += n + int64(4096*rng.Intn(64))
		}
		f.Close()
	}
	src, err := os.Open(srcPath)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		b.Fatal(err)
	}
	if _, err := Digest(ctx, src, st.Size()); err != nil { // warm the page cache
		b.Fatal(err)
	}
	var copying time.Duration
	for b.Loop() {
		t0 := time.Now()
		if _, err := Copy(ctx, filepath.Join(dir, "dst"), src, st.Size(), true); err != nil {
			b.Fatal(err)
		}
		copying += time.Since(t0)
		b.StopTimer()
		os.Remove(filepath.Join(dir, "dst"))
		b.StartTimer()
	}
	b.ReportMetric(float64(copying.Milliseconds())/float64(b.N), "ms-copy+fsync/op")
}
