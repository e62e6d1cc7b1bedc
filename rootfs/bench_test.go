package rootfs

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"testing"
)

// benchLayer builds a layer of dirs directories holding perDir files of
// size bytes each.
func benchLayer(b *testing.B, dirs, perDir, size int) ([]byte, int) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	data := bytes.Repeat([]byte("x"), size)
	n := 0
	for d := range dirs {
		dir := fmt.Sprintf("usr/share/pkg%04d", d)
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755, ModTime: defaultMtime})
		n++
		for f := range perDir {
			tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("%s/file%04d.txt", dir, f), Mode: 0o644, Size: int64(size), ModTime: defaultMtime})
			tw.Write(data)
			n++
		}
	}
	tw.Close()
	return buf.Bytes(), n
}

func benchMerge(b *testing.B, layer []byte, entries int) {
	b.SetBytes(int64(len(layer)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		m := New(&discardStore{}, Limits{})
		if err := m.Apply(context.Background(), 0, "bench", bytes.NewReader(layer)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(entries)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkMergeSmallFiles: 100k entries of 200 bytes (a distro tree's shape).
func BenchmarkMergeSmallFiles(b *testing.B) {
	layer, n := benchLayer(b, 500, 200, 200)
	benchMerge(b, layer, n)
}

// BenchmarkMergeLargeFiles: 16 files of 16 MiB.
func BenchmarkMergeLargeFiles(b *testing.B) {
	layer, n := benchLayer(b, 1, 16, 16<<20)
	benchMerge(b, layer, n)
}

// BenchmarkTarReadSmallFiles is the floor for BenchmarkMergeSmallFiles:
// archive/tar reading the same layer, data discarded, no merge.
func BenchmarkTarReadSmallFiles(b *testing.B) {
	layer, n := benchLayer(b, 500, 200, 200)
	b.SetBytes(int64(len(layer)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		tr := tar.NewReader(bytes.NewReader(layer))
		for {
			if _, err := tr.Next(); err != nil {
				break
			}
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}
