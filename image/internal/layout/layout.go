// Package layout serves the blobs of an OCI image layout, from a directory
// or from an archive holding one, verifying what it serves against the
// descriptors.
package layout

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/image/internal/blob"
)

// MaxIndexSize bounds index.json.
const MaxIndexSize = 16 << 20

// FS is what a layout is read from: a directory (Dir) or an indexed tar
// archive (archive.FS). Names are slash-separated and relative to the
// layout's top; a missing one is fs.ErrNotExist.
type FS interface {
	Open(name string) (io.ReadCloser, error)
	Close() error
}

// Dir is a layout directory.
type Dir string

func (d Dir) Open(name string) (io.ReadCloser, error) {
	return os.Open(filepath.Join(string(d), filepath.FromSlash(name)))
}
func (d Dir) Close() error { return nil }

// Store serves a layout's blobs. It is a blob.Store.
type Store struct {
	FS    FS
	Where string // "OCI layout /path" or "archive /path.tar"
}

var _ blob.Store = (*Store)(nil)

func blobName(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

func (s *Store) openBlob(desc v1.Descriptor, what string) (io.ReadCloser, error) {
	if err := blob.CheckAlgorithm(desc.Digest, what); err != nil {
		return nil, err
	}
	// v1.Hash validated the hex, so the name cannot escape blobs/.
	f, err := s.FS.Open(blobName(desc.Digest))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, hint.New(err, []string{"The layout is incomplete: export or copy it again (e.g. with skopeo copy or crane pull --format=oci)."},
			"%s: %s is missing from %s", what, blobName(desc.Digest), s.Where)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: opening %s in %s: %w", what, blobName(desc.Digest), s.Where, err)
	}
	return f, nil
}

// Index reads the layout's index.json.
func (s *Store) Index() ([]byte, error) {
	rc, err := s.FS.Open("index.json")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, hint.New(nil, []string{"An OCI image layout has index.json and blobs/ at its top; check the path."},
			"%s has no index.json: it is not an OCI image layout", s.Where)
	}
	if err != nil {
		return nil, fmt.Errorf("opening index.json in %s: %w", s.Where, err)
	}
	defer rc.Close()
	return blob.ReadAll(rc, MaxIndexSize, "index.json in "+s.Where)
}

func (s *Store) Manifest(ctx context.Context, desc v1.Descriptor, what string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rc, err := s.openBlob(desc, what)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return blob.ReadVerified(rc, desc, blob.MaxManifestSize, what)
}

func (s *Store) Blob(ctx context.Context, desc v1.Descriptor, what string) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.openBlob(desc, what)
}

func (s *Store) Layer(_, stream context.Context, layers []v1.Descriptor, names []string, i int) (io.ReadCloser, error) {
	return s.Blob(stream, layers[i], names[i])
}

func (s *Store) Close() error { return s.FS.Close() }
