package image

import (
	"context"
	"os"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/image/internal/layout"
)

// resolveOCI resolves the image in an OCI layout held by st.
func resolveOCI(ctx context.Context, st *layout.Store, refName string, opts Options) (*Image, error) {
	raw, err := st.Index()
	if err != nil {
		return nil, err
	}
	idx, err := parseIndex(raw, "index.json in "+st.Where)
	if err != nil {
		return nil, err
	}
	entries, err := selectByRefName(idx.Manifests, refName, st.Where)
	if err != nil {
		return nil, err
	}
	r := &resolver{st: st, want: opts.Platform, maxLayers: opts.maxLayers()}
	var img *Image
	if len(entries) == 1 && entries[0].Platform == nil {
		img, err = r.fromDescriptor(ctx, entries[0], nil)
	} else {
		img, err = r.fromEntries(ctx, entries, nil)
	}
	if err != nil {
		return nil, unwrapPlatform(err)
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
		return nil, hint.New(err, []string{"Check the path given to --oci-layout (PATH or PATH:REF)."}, "cannot open OCI layout %s", path)
	}
	if !fi.IsDir() {
		return nil, hint.New(nil, []string{"--oci-layout takes a directory; for a tar file use --oci-tar."}, "OCI layout %s is not a directory", path)
	}
	st := &layout.Store{FS: layout.Dir(path), Where: "OCI layout " + path}
	img, err := resolveOCI(ctx, st, ref, opts)
	if err != nil {
		return nil, err
	}
	return img, nil
}
