package convert

import (
	"context"
	"errors"
	"math/rand"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/docker2vm/docker2vm/image"
	"github.com/docker2vm/docker2vm/internal/faultproxy"
	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
	"github.com/docker2vm/docker2vm/internal/testenv/registrytest"
	"github.com/docker2vm/docker2vm/internal/testtar"
	"github.com/docker2vm/docker2vm/rootfs"
)

// TestLimitStopsDownload: a conversion refused by --max-bytes stops
// downloading the layer there, instead of reading the rest of it.
func TestLimitStopsDownload(t *testing.T) {
	require.Integration(t, "starts a registry")
	reg := registrytest.Start(t, registrytest.Options{})
	const size = 48 << 20
	content := make([]byte, size)
	rand.New(rand.NewSource(1)).Read(content)
	layer := imagetest.NewLayer(t, testtar.Build(t, testtar.FileBytes("big", content)), imagetest.Gzip, true)
	reg.Push(t, "big:1", imagetest.New(t, imagetest.Spec{OCI: true, Layers: []v1.Layer{layer}}), nil)
	d, _ := layer.Digest()
	proxy := faultproxy.Start(t, "http://"+reg.Host)

	o := options(image.Source{Kind: image.KindRegistry, Ref: proxy.Host + "/big:1"}, filepath.Join(t.TempDir(), "out"))
	o.Limits.MaxBytes = 1 << 20
	_, err := Run(context.Background(), o)
	if !errors.Is(err, rootfs.ErrLimit) || !strings.Contains(err.Error(), "--max-bytes") {
		t.Fatalf("err = %v, want the --max-bytes limit", err)
	}
	var sent int64
	for i := 0; i < 100; i++ { // until the proxy's count settles
		time.Sleep(50 * time.Millisecond)
		n := proxy.BodyBytes("/blobs/" + d.String())
		if n == sent && i > 2 {
			break
		}
		sent = n
	}
	t.Logf("%d of the layer's %d bytes were sent", sent, len(layer.Raw))
	// Segments up to 16 MiB ahead of the reader may be in flight when the
	// limit trips (8 MiB each here, so three of six): at most about half
	// the layer, and under load a fourth may have started.
	if sent > int64(len(layer.Raw))*2/3 {
		t.Errorf("%d of the layer's %d bytes were downloaded for a run refused after 1 MiB", sent, len(layer.Raw))
	}
}
