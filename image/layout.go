package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

const maxIndexJSONSize = 16 << 20

// fileSystem is what an OCI layout is read from: a directory or an indexed
// tar archive. Names are slash-separated and relative to the layout root.
type fileSystem interface {
	open(name string) (io.ReadCloser, error) // fs.ErrNotExist when missing
	close() error
}

type dirFS struct{ root string }

func (d dirFS) open(name string) (io.ReadCloser, error) {
	return os.Open(filepath.Join(d.root, filepath.FromSlash(name)))
}
func (d dirFS) close() error { return nil }

// layoutStore serves an OCI image layout from a fileSystem, verifying what
// it serves against the descriptors.
type layoutStore struct {
	fsys  fileSystem
	where string // "OCI layout /path" or "OCI archive /path.tar"
}

func blobName(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

func (s *layoutStore) openBlob(desc v1.Descriptor, what string) (io.ReadCloser, error) {
	if err := checkAlgorithm(desc.Digest, what); err != nil {
		return nil, err
	}
	// v1.Hash validated the hex, so the name cannot escape blobs/.
	f, err := s.fsys.open(blobName(desc.Digest))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, newError(err, []string{"The layout is incomplete: export or copy it again (e.g. with skopeo copy or crane pull --format=oci)."},
			"%s: %s is missing from %s", what, blobName(desc.Digest), s.where)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: opening %s in %s: %w", what, blobName(desc.Digest), s.where, err)
	}
	return f, nil
}

func (s *layoutStore) manifest(ctx context.Context, desc v1.Descriptor, what string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rc, err := s.openBlob(desc, what)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return readVerified(rc, desc, maxManifestSize, what)
}

func (s *layoutStore) blob(ctx context.Context, desc v1.Descriptor, what string) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.openBlob(desc, what)
}

func (s *layoutStore) layer(_, stream context.Context, img *Image, i int) (io.ReadCloser, error) {
	return s.blob(stream, img.layers[i], img.layerName(i))
}

func (s *layoutStore) close() error { return s.fsys.close() }

// resolveOCI resolves the image in an OCI layout held by st.
func resolveOCI(ctx context.Context, st *layoutStore, refName string, opts Options) (*Image, error) {
	rc, err := st.fsys.open("index.json")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, newError(nil, []string{"An OCI image layout has index.json and blobs/ at its top; check the path."},
			"%s has no index.json: it is not an OCI image layout", st.where)
	}
	if err != nil {
		return nil, fmt.Errorf("opening index.json in %s: %w", st.where, err)
	}
	raw, err := readAllLimit(rc, maxIndexJSONSize, "index.json in "+st.where)
	rc.Close()
	if err != nil {
		return nil, err
	}
	idx, err := parseIndex(raw, "index.json in "+st.where)
	if err != nil {
		return nil, err
	}
	entries, err := selectByRefName(idx.Manifests, refName, st.where)
	if err != nil {
		return nil, err
	}
	r := &resolver{st: st, want: opts.Platform, maxLayers: opts.maxLayers()}
	var img *Image
	if len(entries) == 1 && entries[0].Platform == nil {
		img, err = r.fromDescriptor(ctx, entries[0], nil)
		if pe, ok := err.(*platformErr); ok {
			err = pe.err
		}
	} else {
		img, err = r.fromEntries(ctx, entries, nil)
		if pe, ok := err.(*platformErr); ok {
			err = pe.err
		}
	}
	if err != nil {
		return nil, err
	}
	img.RefName = refName
	return img, nil
}

func refNameFor(src Source, opts Options) (path, ref string) {
	path, ref = SplitPathRef(src.Ref)
	if opts.RefName != "" {
		ref = opts.RefName // the explicit option wins over a ":REF" suffix
	}
	return path, ref
}

func resolveLayout(ctx context.Context, src Source, opts Options) (*Image, error) {
	path, ref := refNameFor(src, opts)
	fi, err := os.Stat(path)
	if err != nil {
		return nil, newError(err, []string{"Check the path given to --oci-layout (PATH or PATH:REF)."}, "cannot open OCI layout %s", path)
	}
	if !fi.IsDir() {
		return nil, newError(nil, []string{"--oci-layout takes a directory; for a tar file use --oci-tar."}, "OCI layout %s is not a directory", path)
	}
	st := &layoutStore{fsys: dirFS{root: path}, where: "OCI layout " + path}
	img, err := resolveOCI(ctx, st, ref, opts)
	if err != nil {
		return nil, err
	}
	return img, nil
}
