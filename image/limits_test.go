package image

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/image/internal/blob"
	"github.com/docker2vm/docker2vm/internal/testenv"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
	"github.com/docker2vm/docker2vm/internal/testtar"
)

// countingReader counts the bytes read from it and whether it was closed.
type countingReader struct {
	r      io.Reader
	n      atomic.Int64
	closed atomic.Bool
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
func (c *countingReader) Close() error { c.closed.Store(true); return nil }

// gzipBomb is a gzip stream of a tar holding one file of size bytes of
// zeros, built from repeated gzip members (a reader decompresses them as
// one stream), so that a 10 GiB bomb costs about 10 MB and no time. Its
// header is written by hand, not with internal/testtar, which holds every
// byte of a file in memory.
func gzipBomb(t *testing.T, size int64) []byte {
	t.Helper()
	const chunk = 64 << 20
	member := func(data []byte) []byte {
		var b bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
		zw.Write(data)
		zw.Close()
		return b.Bytes()
	}
	var hdr bytes.Buffer
	tw := tar.NewWriter(&hdr)
	if err := tw.WriteHeader(&tar.Header{Name: "bomb", Typeflag: tar.TypeReg, Mode: 0o644, Size: size}); err != nil {
		t.Fatal(err)
	}
	tw.Flush()
	zeros := member(make([]byte, chunk))
	out := member(hdr.Bytes())
	for left := size; left > 0; left -= chunk {
		if left < chunk {
			out = append(out, member(make([]byte, left))...)
			break
		}
		out = append(out, zeros...)
	}
	return out
}

// TestAbortLayer: a consumer that stops early (a limit trips on the first
// header of a decompression bomb) and aborts the stream makes it read a
// bounded prefix of the stored blob, not all of it (Close would read and
// decompress all of it to deliver the digest verdict: the tampering tests
// check that).
func TestAbortLayer(t *testing.T) {
	bomb := gzipBomb(t, 10<<30)
	desc := v1.Descriptor{Digest: blob.Sha256Of(bomb), Size: int64(len(bomb))}
	// The diff ID of 10 GiB of tar is not worth computing: Abort never
	// checks it, and Close fails on the stored digest first.
	diffID := blob.Sha256Of([]byte("not computed"))

	open := func(t *testing.T, d v1.Descriptor) (*layerReader, *countingReader) {
		t.Helper()
		raw := &countingReader{r: bytes.NewReader(bomb)}
		_, cancel := context.WithCancel(context.Background())
		lr, err := newLayerReader(context.Background(), cancel, raw, d, diffID, "layer 0 "+d.Digest.String())
		if err != nil {
			t.Fatal(err)
		}
		h, err := tar.NewReader(lr).Next()
		if err != nil || h.Size != 10<<30 {
			t.Fatalf("first header: %v, %v", h, err)
		}
		return lr, raw
	}

	t.Run("abort", func(t *testing.T) {
		lr, raw := open(t, desc)
		AbortLayer(lr)
		// At most the read-ahead ring of the first stage (5 MiB) and a
		// buffer: a bound, not a timing.
		if n := raw.n.Load(); n > 6<<20 {
			t.Errorf("%d of the bomb's %d bytes were read", n, len(bomb))
		}
		if !raw.closed.Load() {
			t.Error("the stored bomb was not closed")
		}
		if err := lr.Close(); err != nil {
			t.Errorf("Close after Abort: %v", err)
		}
		if _, err := lr.Read(make([]byte, 1)); err == nil {
			t.Error("Read after Abort succeeded")
		}
	})
	t.Run("abort on other readers closes", func(t *testing.T) {
		raw := &countingReader{r: strings.NewReader("x")}
		AbortLayer(raw)
		if !raw.closed.Load() {
			t.Error("not closed")
		}
	})
}

func TestMaxLayers(t *testing.T) {
	var layers []v1.Layer
	for _, n := range []string{"a", "b", "c"} {
		layers = append(layers, imagetest.NewLayer(t, testtar.Build(t, testtar.File(n, n)), imagetest.Gzip, true))
	}
	img := imagetest.New(t, imagetest.Spec{OCI: true, Layers: layers})
	dir := t.TempDir()
	sources := []struct {
		kind SourceKind
		ref  string
	}{
		{KindOCILayout, imagetest.WriteLayout(t, filepath.Join(dir, "layout"), imagetest.LayoutEntry{Image: img})},
		{KindOCIArchive, imagetest.WriteDockerSave(t, filepath.Join(dir, "save.tar"), map[string]v1.Image{"example.com/app:1": img})},
	}
	for _, src := range sources {
		t.Run(string(src.kind), func(t *testing.T) {
			for _, tc := range []struct {
				max     int
				wantErr string
			}{{2, "has 3 layers, more than the limit of 2"}, {3, ""}, {0, ""}} {
				_, err := Resolve(context.Background(), Source{Kind: src.kind, Ref: src.ref}, Options{Platform: amd64, NoCache: true, MaxLayers: tc.max})
				if tc.wantErr == "" {
					if err != nil {
						t.Errorf("MaxLayers %d: %v", tc.max, err)
					}
					continue
				}
				testenv.WantErr(t, err, tc.wantErr)
				if h := strings.Join(hint.Of(err), "\n"); !strings.Contains(h, "--max-layers 3") {
					t.Errorf("hints %q", h)
				}
			}
		})
	}
	if err := checkLayerCount(DefaultMaxLayers+1, (Options{}).maxLayers(), "manifest x"); err == nil {
		t.Errorf("the default limit is not %d", DefaultMaxLayers)
	}
}
