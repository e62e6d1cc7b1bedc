package image

import (
	"context"
	"io"
	"math/rand"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
	"github.com/docker2vm/docker2vm/internal/testtar"
)

// BenchmarkOpenLayer measures reading a 64 MiB (uncompressed) layer from an
// OCI layout: the pre-verification pass, the digest and diff ID checks and
// decompression.
func BenchmarkOpenLayer(b *testing.B) {
	for _, c := range []imagetest.Compression{imagetest.Gzip, imagetest.Zstd, imagetest.None} {
		b.Run(string(c), func(b *testing.B) {
			rng := rand.New(rand.NewSource(1))
			words := []string{"alpha ", "beta ", "gamma ", "delta ", "epsilon ", "zeta\n"}
			buf := make([]byte, 0, 64<<20)
			for len(buf) < 64<<20 {
				buf = append(buf, words[rng.Intn(len(words))]...)
			}
			tarBytes := testtar.Build(b, testtar.FileBytes("big", buf))
			img0 := imagetest.New(b, imagetest.Spec{OCI: true, Layers: []v1.Layer{imagetest.NewLayer(b, tarBytes, c, true)}})
			dir := imagetest.WriteLayout(b, b.TempDir(), imagetest.LayoutEntry{Image: img0})
			img, err := Resolve(context.Background(), Source{Kind: KindOCILayout, Ref: dir}, Options{Platform: v1.Platform{OS: "linux", Architecture: "amd64"}, NoCache: true})
			if err != nil {
				b.Fatal(err)
			}
			defer img.Close()
			b.SetBytes(int64(len(tarBytes)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				rc, err := img.OpenLayer(context.Background(), 0)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, rc); err != nil {
					b.Fatal(err)
				}
				if err := rc.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
