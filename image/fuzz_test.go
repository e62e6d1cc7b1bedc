package image

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
	"github.com/docker2vm/docker2vm/internal/testtar"
)

// FuzzOpenArchive feeds arbitrary bytes to Resolve as an --oci-tar file and
// reads every layer of what resolves: it must fail cleanly, never panic,
// hang or allocate without bound.
func FuzzOpenArchive(f *testing.F) {
	seedDir := f.TempDir()
	img := imagetest.New(f, imagetest.Spec{OCI: true, Layers: []v1.Layer{
		imagetest.NewLayer(f, testtar.Build(f, testtar.File("a", "x")), imagetest.Gzip, true),
		imagetest.NewLayer(f, testtar.Build(f, testtar.File("b", "y")), imagetest.Zstd, true),
		imagetest.NewLayer(f, testtar.Build(f, testtar.File("c", "z")), imagetest.None, true),
	}})
	layout := imagetest.WriteLayout(f, filepath.Join(seedDir, "layout"), imagetest.LayoutEntry{Image: img, RefName: "r"})
	for _, p := range []string{
		imagetest.WriteOCIArchive(f, layout, filepath.Join(seedDir, "a.tar"), false),
		imagetest.WriteOCIArchive(f, layout, filepath.Join(seedDir, "a.tar.gz"), true),
		imagetest.WriteDockerSave(f, filepath.Join(seedDir, "s.tar"), map[string]v1.Image{"x:1": img}),
		imagetest.WriteLegacyDockerSave(f, filepath.Join(seedDir, "l.tar"), img, "x:1"),
	} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0x1f, 0x8b, 0x08, 0x00})
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd})
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		p := filepath.Join(dir, "in.tar")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		img, err := Resolve(ctx, Source{Kind: KindOCIArchive, Ref: p}, Options{
			Platform: v1.Platform{OS: "linux", Architecture: "amd64"}, CacheDir: dir, MaxArchiveSize: 16 << 20,
		})
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		tryReadFiles(ctx, img)
		if err := img.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if tmps, _ := filepath.Glob(filepath.Join(dir, "tmp", "*")); len(tmps) != 0 {
			t.Fatalf("temporary files left: %v", tmps)
		}
	})
}
