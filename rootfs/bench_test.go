package rootfs

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/docker2vm/docker2vm/internal/testtar"
)

// benchLayer builds a layer of dirs directories holding perDir files of
// size bytes each.
func benchLayer(b *testing.B, dirs, perDir, size int) ([]byte, int) {
	data := bytes.Repeat([]byte("x"), size)
	var ents []ent
	for d := range dirs {
		dir := fmt.Sprintf("usr/share/pkg%04d", d)
		ents = append(ents, D(dir+"/"))
		for f := range perDir {
			ents = append(ents, testtar.FileBytes(fmt.Sprintf("%s/file%04d.txt", dir, f), data))
		}
	}
	return testtar.Build(b, ents...), len(ents)
}

func benchMerge(b *testing.B, layer []byte, entries int) {
	b.SetBytes(int64(len(layer)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		m := New(&discardStore{}, Limits{})
		if err := m.Apply(context.Background(), "bench", bytes.NewReader(layer)); err != nil {
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
