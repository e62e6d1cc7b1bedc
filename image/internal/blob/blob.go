// Package blob holds what every image source shares about blobs: the
// interface a source serves them through (Store), digest and size
// verification while they stream, the integrity and transfer errors
// callers match, size limits, and download progress.
package blob

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/docker2vm/docker2vm/hint"
)

// Store serves the manifests and blobs of one source: a registry
// repository, an OCI layout (a directory or an archive), a docker-save
// archive.
type Store interface {
	// Manifest returns the bytes of the manifest or index desc names,
	// verified against desc.Digest (and desc.Size when set).
	Manifest(ctx context.Context, desc v1.Descriptor, what string) ([]byte, error)
	// Blob returns the raw bytes of a blob; the caller verifies them.
	Blob(ctx context.Context, desc v1.Descriptor, what string) (io.ReadCloser, error)
	// Layer returns the raw bytes of layer i of layers (named by names,
	// for messages), which the caller verifies: a local store's blob, or
	// a registry's download of it, which the first call starts with the
	// others'. ctx is the run's, stream the layer stream's own.
	Layer(ctx, stream context.Context, layers []v1.Descriptor, names []string, i int) (io.ReadCloser, error)
	Close() error
}

// Size limits of the small blobs that are read whole.
const (
	MaxManifestSize = 8 << 20
	MaxConfigSize   = 32 << 20
)

// ReadAll reads at most limit bytes, failing beyond.
func ReadAll(r io.Reader, limit int64, what string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", what, err)
	}
	if int64(len(b)) > limit {
		return nil, hint.New(nil, nil, "%s is larger than %d bytes", what, limit)
	}
	return b, nil
}

// SniffManifestType reads the mediaType field, or guesses from the shape.
func SniffManifestType(b []byte) types.MediaType {
	var probe struct {
		MediaType types.MediaType `json:"mediaType"`
		Manifests json.RawMessage `json:"manifests"`
		Config    json.RawMessage `json:"config"`
		FSLayers  json.RawMessage `json:"fsLayers"`
	}
	if json.Unmarshal(b, &probe) != nil {
		return ""
	}
	switch {
	case probe.MediaType != "":
		return probe.MediaType
	case probe.Manifests != nil:
		return types.OCIImageIndex
	case probe.Config != nil:
		return types.OCIManifestSchema1
	case probe.FSLayers != nil:
		return types.DockerManifestSchema1
	}
	return ""
}

// Magic numbers.
var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// MagicSize is how many bytes SniffCompression needs.
const MagicSize = 4

// SniffCompression says how a stream that starts with head is compressed:
// "gzip", "zstd" or "none".
func SniffCompression(head []byte) string {
	switch {
	case bytes.HasPrefix(head, gzipMagic):
		return "gzip"
	case bytes.HasPrefix(head, zstdMagic):
		return "zstd"
	}
	return "none"
}

// CopyCtx is io.Copy that stops when ctx is done.
func CopyCtx(ctx context.Context, w io.Writer, r io.Reader) (int64, error) {
	buf := make([]byte, 128<<10)
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		n, err := r.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}
