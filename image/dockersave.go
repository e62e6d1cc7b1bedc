package image

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/image/internal/archive"
	"github.com/docker2vm/docker2vm/image/internal/blob"
	"github.com/docker2vm/docker2vm/image/internal/layout"
)

// maxDockerManifest bounds a docker-save archive's manifest.json.
const maxDockerManifest = 16 << 20

func resolveArchive(ctx context.Context, src Source, opts Options) (*Image, error) {
	p, ref := refNameFor(src, opts)
	aopts := archive.Options{MaxSize: opts.MaxArchiveSize, Progress: opts.Progress}
	if !opts.NoCache {
		aopts.CacheDir = opts.CacheDir
	}
	t, err := archive.Open(ctx, p, aopts)
	if err != nil {
		return nil, err
	}
	where := "archive " + p
	var img *Image
	switch {
	case t.Has("index.json"):
		img, err = resolveOCI(ctx, &layout.Store{FS: t, Where: where}, ref, opts)
	case t.Has("manifest.json"):
		img, err = resolveDockerSave(ctx, t, where, ref, opts)
	default:
		err = archive.NotArchive(where, errors.New("it has neither index.json (OCI layout) nor manifest.json (docker save) at its top"))
	}
	if err != nil {
		t.Close()
		return nil, err
	}
	return img, nil
}

// dockerSaveEntry is one image in a docker-save manifest.json.
type dockerSaveEntry struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// dockerSaveStore serves the blobs of a legacy docker-save archive by the
// digests resolveDockerSave assigned them.
type dockerSaveStore struct {
	t      *archive.FS
	byHash map[v1.Hash]string // digest -> member name
	where  string
}

func (s *dockerSaveStore) Manifest(ctx context.Context, desc v1.Descriptor, what string) ([]byte, error) {
	return nil, fmt.Errorf("%s: %s has no stored manifests", what, s.where)
}

func (s *dockerSaveStore) Blob(ctx context.Context, desc v1.Descriptor, what string) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	name, ok := s.byHash[desc.Digest]
	if !ok {
		return nil, fmt.Errorf("%s: not in %s", what, s.where)
	}
	return s.t.Open(name)
}

func (s *dockerSaveStore) Layer(_, stream context.Context, layers []v1.Descriptor, names []string, i int) (io.ReadCloser, error) {
	return s.Blob(stream, layers[i], names[i])
}

func (s *dockerSaveStore) Close() error { return s.t.Close() }

// digestFromName returns the digest a member name encodes: "blobs/sha256/<hex>"
// (Docker 25+) or "<hex>.json" (older configs).
func digestFromName(name string) (v1.Hash, bool) {
	name = archive.CleanMember(name)
	if strings.HasPrefix(name, "sha256:") && !strings.Contains(name, "/") { // go-containerregistry's tarball
		h, err := v1.NewHash(name)
		return h, err == nil
	}
	if strings.HasPrefix(name, "blobs/sha256/") {
		h, err := v1.NewHash("sha256:" + strings.TrimPrefix(name, "blobs/sha256/"))
		return h, err == nil
	}
	if strings.HasSuffix(name, ".json") && !strings.Contains(name, "/") {
		h, err := v1.NewHash("sha256:" + strings.TrimSuffix(name, ".json"))
		return h, err == nil
	}
	return v1.Hash{}, false
}

// Long: a docker save archive's manifest.json, its config and its layers
// are read and checked field by field, in the format's order, each with its
// own message.
func resolveDockerSave(ctx context.Context, t *archive.FS, where, ref string, opts Options) (*Image, error) {
	rc, err := t.Open("manifest.json")
	if err != nil {
		return nil, err
	}
	raw, err := blob.ReadAll(rc, maxDockerManifest, "manifest.json in "+where)
	rc.Close()
	if err != nil {
		return nil, err
	}
	var entries []dockerSaveEntry
	if err := json.Unmarshal(raw, &entries); err != nil {
		return nil, archive.NotArchive(where, fmt.Errorf("parsing manifest.json: %w", err))
	}
	e, err := pickDockerSaveEntry(entries, ref, where)
	if err != nil {
		return nil, err
	}
	// Config: verified when its name encodes its digest.
	cfgWhat := "config " + e.Config
	rc, err = t.Open(e.Config)
	if err != nil {
		return nil, hint.New(err, nil, "%s: %s is missing from %s", cfgWhat, e.Config, where)
	}
	cfgRaw, err := blob.ReadAll(rc, blob.MaxConfigSize, cfgWhat)
	rc.Close()
	if err != nil {
		return nil, err
	}
	cfgDigest := blob.Sha256Of(cfgRaw)
	if want, ok := digestFromName(e.Config); ok {
		cfgWhat = "config " + want.String()
		if want != cfgDigest {
			return nil, &blob.IntegrityError{What: cfgWhat, Msg: "got " + cfgDigest.String()}
		}
	}
	if err := checkLayerCount(len(e.Layers), opts.maxLayers(), "the image in "+where); err != nil {
		return nil, err
	}
	st := &dockerSaveStore{t: t, byHash: map[v1.Hash]string{}, where: where}
	m := &v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.DockerManifestSchema2,
		Config:        v1.Descriptor{MediaType: types.DockerConfigJSON, Size: int64(len(cfgRaw)), Digest: cfgDigest},
	}
	var cfg struct {
		RootFS struct {
			DiffIDs []v1.Hash `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(cfgRaw, &cfg); err != nil {
		return nil, hint.New(err, []string{"The archive is corrupt: save the image again."}, "cannot parse %s", cfgWhat)
	}
	if len(cfg.RootFS.DiffIDs) != len(e.Layers) {
		return nil, hint.New(nil, []string{"The archive is corrupt: save the image again."},
			"%s lists %d layers but its config has %d diff IDs", where, len(e.Layers), len(cfg.RootFS.DiffIDs))
	}
	for i, name := range e.Layers {
		what := LayerName(i, len(e.Layers), name)
		mb, ok := t.Section(name)
		if !ok {
			return nil, hint.New(nil, []string{"The archive is incomplete: save the image again."}, "%s is missing from %s", what, where)
		}
		head := make([]byte, blob.MagicSize)
		n, _ := io.ReadFull(io.NewSectionReader(mb, 0, mb.Size()), head)
		comp := blob.SniffCompression(head[:n])
		diffID := cfg.RootFS.DiffIDs[i]
		var dg v1.Hash
		if h, ok := digestFromName(name); ok {
			dg = h
		} else if comp == "none" {
			dg = diffID // the stored bytes are the uncompressed tar
		} else {
			// A compressed layer without its digest in the name: hash it.
			h := sha256.New()
			if _, err := blob.CopyCtx(ctx, h, io.NewSectionReader(mb, 0, mb.Size())); err != nil {
				return nil, fmt.Errorf("hashing %s: %w", what, err)
			}
			dg = blob.HashOf(h)
		}
		mt := types.MediaType("application/vnd.docker.image.rootfs.diff.tar")
		switch comp {
		case "gzip":
			mt = types.DockerLayer
		case "zstd":
			mt = types.OCILayerZStd
		}
		st.byHash[dg] = name
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: mt, Size: mb.Size(), Digest: dg})
	}
	rawManifest, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	img, err := buildImage(blob.Sha256Of(rawManifest), m, rawManifest, cfgDigest, cfgRaw, opts.Platform, nil)
	if err != nil {
		return nil, unwrapPlatform(err)
	}
	img.setStore(st)
	img.RefName = ref
	return img, nil
}

func pickDockerSaveEntry(entries []dockerSaveEntry, ref, where string) (dockerSaveEntry, error) {
	var tags []string
	for _, e := range entries {
		tags = append(tags, e.RepoTags...)
	}
	if ref == "" {
		switch len(entries) {
		case 1:
			return entries[0], nil
		case 0:
			return dockerSaveEntry{}, archive.NotArchive(where, errors.New("its manifest.json lists no images"))
		}
		return dockerSaveEntry{}, hint.New(nil, []string{
			fmt.Sprintf("Select one with %s:REF (or the reference name option), REF one of: %s.", where, strings.Join(tags, ", ")),
		}, "%s holds %d images; available refs: %s", where, len(entries), strings.Join(tags, ", "))
	}
	for _, e := range entries {
		for _, t := range e.RepoTags {
			if t == ref || strings.HasSuffix(t, "/"+ref) || strings.HasSuffix(t, ":"+ref) && !strings.Contains(ref, ":") && countTag(entries, ref) == 1 {
				return e, nil
			}
		}
	}
	avail := strings.Join(tags, ", ")
	if avail == "" {
		avail = "none (the images have no tags)"
	}
	return dockerSaveEntry{}, hint.New(nil, []string{"Use one of the available refs: " + avail + "."},
		"%s has no image named %q; available refs: %s", where, ref, avail)
}

// countTag counts images having a tag ending in ":ref".
func countTag(entries []dockerSaveEntry, ref string) int {
	n := 0
	for _, e := range entries {
		for _, t := range e.RepoTags {
			if strings.HasSuffix(t, ":"+ref) {
				n++
				break
			}
		}
	}
	return n
}
