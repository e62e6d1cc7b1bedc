package image

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/image/internal/blob"
)

// resolver walks indexes and manifests of an OCI-shaped source (registry,
// layout, OCI archive) held by st.
type resolver struct {
	st        blob.Store
	want      Platform
	maxLayers int
}

// candidate is an image manifest found in an index, with the platform the
// index states for it (nil when none).
type candidate struct {
	desc     v1.Descriptor
	platform *Platform
}

// collect expands index entries into image manifest candidates, descending
// into nested indexes, skipping attestations.
func (r *resolver) collect(ctx context.Context, entries []v1.Descriptor, inherited *Platform, depth int, out *[]candidate) error {
	if depth > maxIndexDepth {
		return hint.New(nil, nil, "image indexes nested more than %d deep", maxIndexDepth)
	}
	for _, d := range entries {
		if len(*out) > maxIndexEntries {
			return hint.New(nil, nil, "image index lists more than %d manifests", maxIndexEntries)
		}
		if isAttestation(d) {
			continue
		}
		p := d.Platform
		if p == nil {
			p = inherited
		}
		switch {
		case isIndexType(d.MediaType):
			if p != nil && platformScore(*p, r.want) == 0 && p.OS != "" {
				// A nested index for another platform: record its
				// platform for the miss message without fetching it.
				*out = append(*out, candidate{desc: d, platform: p})
				continue
			}
			idx, err := r.index(ctx, d)
			if err != nil {
				return err
			}
			if err := r.collect(ctx, idx.Manifests, p, depth+1, out); err != nil {
				return err
			}
		case isManifestType(d.MediaType):
			*out = append(*out, candidate{desc: d, platform: p})
		case d.MediaType == types.DockerManifestSchema1 || d.MediaType == types.DockerManifestSchema1Signed:
			*out = append(*out, candidate{desc: d, platform: p})
		default:
			// Artifacts and unknown entries are not images; skip them.
		}
	}
	return nil
}

func (r *resolver) index(ctx context.Context, d v1.Descriptor) (*v1.IndexManifest, error) {
	what := "image index " + d.Digest.String()
	b, err := r.st.Manifest(ctx, d, what)
	if err != nil {
		return nil, err
	}
	return parseIndex(b, what)
}

func parseIndex(b []byte, what string) (*v1.IndexManifest, error) {
	idx, err := v1.ParseIndexManifest(bytes.NewReader(b))
	if err != nil {
		return nil, hint.New(err, []string{"The image source is corrupt or not an OCI image."}, "cannot parse %s", what)
	}
	return idx, nil
}

// fromEntries picks the image for r.want among index entries and resolves
// it.
func (r *resolver) fromEntries(ctx context.Context, entries []v1.Descriptor, indexDigest *v1.Hash) (*Image, error) {
	var cands []candidate
	if err := r.collect(ctx, entries, nil, 0, &cands); err != nil {
		return nil, err
	}
	best, bestScore := -1, 0
	var unknown []int
	var offered []Platform
	for i, c := range cands {
		if c.platform == nil || c.platform.OS == "" {
			unknown = append(unknown, i)
			continue
		}
		offered = append(offered, *c.platform)
		if !isManifestType(c.desc.MediaType) {
			continue
		}
		if s := platformScore(*c.platform, r.want); s > bestScore {
			best, bestScore = i, s
		}
	}
	if best >= 0 {
		img, err := r.fromManifest(ctx, cands[best].desc, nil, cands[best].platform)
		if err != nil {
			return nil, err
		}
		img.IndexDigest = indexDigest
		return img, nil
	}
	// Entries without a platform: look at their configs.
	var firstErr error
	for n, i := range unknown {
		if n >= maxUnknownPlatformTry {
			break
		}
		img, err := r.fromManifest(ctx, cands[i].desc, nil, nil)
		if err == nil {
			img.IndexDigest = indexDigest
			return img, nil
		}
		var pe *platformErr
		if asPlatformErr(err, &pe) {
			if len(cands) == 1 {
				return nil, pe // a single-platform image: say what it is
			}
			offered = append(offered, pe.have)
			continue
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	if firstErr != nil && len(offered) == 0 {
		return nil, firstErr
	}
	if len(cands) == 0 {
		return nil, hint.New(nil, []string{"Check that the reference names a container image, not an artifact."}, "the image index lists no container images")
	}
	return nil, platformMissError(r.want, offered)
}

// platformErr is a config naming another platform.
type platformErr struct {
	have, want Platform
	err        error
}

func (e *platformErr) Error() string   { return e.err.Error() }
func (e *platformErr) Unwrap() error   { return e.err }
func (e *platformErr) Hints() []string { return hint.Of(e.err) }

// unwrapPlatform returns err, or the error a platformErr carries: that
// type is the resolver's signal between its own steps, not for callers.
func unwrapPlatform(err error) error {
	if pe, ok := err.(*platformErr); ok {
		return pe.err
	}
	return err
}

func asPlatformErr(err error, pe **platformErr) bool {
	p, ok := err.(*platformErr)
	if ok {
		*pe = p
	}
	return ok
}

// fromDescriptor resolves a top-level descriptor (index or manifest). raw,
// when not nil, holds its already verified bytes.
func (r *resolver) fromDescriptor(ctx context.Context, d v1.Descriptor, raw []byte) (*Image, error) {
	mt := d.MediaType
	if mt == "" && raw != nil {
		mt = blob.SniffManifestType(raw)
	}
	switch {
	case isIndexType(mt):
		what := "image index " + d.Digest.String()
		if raw == nil {
			var err error
			if raw, err = r.st.Manifest(ctx, d, what); err != nil {
				return nil, err
			}
		}
		idx, err := parseIndex(raw, what)
		if err != nil {
			return nil, err
		}
		dg := d.Digest
		return r.fromEntries(ctx, idx.Manifests, &dg)
	case isManifestType(mt):
		return r.fromManifest(ctx, d, raw, d.Platform)
	case mt == types.DockerManifestSchema1 || mt == types.DockerManifestSchema1Signed:
		return nil, schema1Error(d)
	}
	return nil, hint.New(nil, []string{"Check that the reference names a container image, not an artifact (Helm chart, signature, SBOM)."},
		"%s has media type %q, which is not an image manifest or index", d.Digest, mt)
}

func schema1Error(d v1.Descriptor) error {
	return hint.New(nil, []string{"Re-push the image with a current Docker, crane or skopeo: that converts it to schema 2."},
		"manifest %s uses Docker image manifest schema 1, which is deprecated and not supported", d.Digest)
}

// fromManifest fetches and checks an image manifest and its config.
func (r *resolver) fromManifest(ctx context.Context, d v1.Descriptor, raw []byte, indexPlatform *Platform) (*Image, error) {
	what := "manifest " + d.Digest.String()
	if d.MediaType == types.DockerManifestSchema1 || d.MediaType == types.DockerManifestSchema1Signed {
		return nil, schema1Error(d)
	}
	if raw == nil {
		var err error
		if raw, err = r.st.Manifest(ctx, d, what); err != nil {
			return nil, err
		}
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, hint.New(err, []string{"The image source is corrupt or not an OCI image."}, "cannot parse %s", what)
	}
	if m.SchemaVersion != 2 {
		return nil, schema1Error(d)
	}
	if err := checkLayerCount(len(m.Layers), r.maxLayers, what); err != nil {
		return nil, err
	}
	if m.MediaType != "" && !isManifestType(m.MediaType) {
		return nil, hint.New(nil, nil, "%s has media type %q, which is not an image manifest", what, m.MediaType)
	}
	switch m.Config.MediaType {
	case types.OCIConfigJSON, types.DockerConfigJSON, "":
	default:
		return nil, hint.New(nil, []string{"Check that the reference names a container image, not an artifact (Helm chart, signature, SBOM)."},
			"%s is not a container image: its config has media type %q", what, m.Config.MediaType)
	}
	cfgWhat := "config " + m.Config.Digest.String()
	if err := blob.CheckAlgorithm(m.Config.Digest, cfgWhat); err != nil {
		return nil, err
	}
	rc, err := r.st.Blob(ctx, m.Config, cfgWhat)
	if err != nil {
		return nil, err
	}
	cfgRaw, err := blob.ReadVerified(rc, m.Config, blob.MaxConfigSize, cfgWhat)
	rc.Close()
	if err != nil {
		return nil, err
	}
	img, err := buildImage(d.Digest, m, raw, m.Config.Digest, cfgRaw, r.want, indexPlatform)
	if err != nil {
		return nil, err
	}
	img.setStore(r.st)
	return img, nil
}

// buildImage checks a manifest and config against each other and the wanted
// platform, and fills the Image.
func buildImage(digest v1.Hash, m *v1.Manifest, rawManifest []byte, cfgDigest v1.Hash, rawConfig []byte, want Platform, indexPlatform *Platform) (*Image, error) {
	cfgWhat := "config " + cfgDigest.String()
	cfg, err := v1.ParseConfigFile(bytes.NewReader(rawConfig))
	if err != nil {
		return nil, hint.New(err, []string{"The image source is corrupt or not a container image."}, "cannot parse %s", cfgWhat)
	}
	have := Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}
	if have.OS == "" && have.Architecture == "" && indexPlatform != nil {
		have = *indexPlatform
	}
	if have.Variant == "" && indexPlatform != nil && indexPlatform.Architecture == have.Architecture {
		have.Variant = indexPlatform.Variant
	}
	if have.OS == "" {
		have.OS = "linux"
	}
	if platformScore(have, want) == 0 {
		return nil, &platformErr{have: have, want: want, err: platformMismatchError(have, want)}
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, hint.New(nil, []string{"The image source is corrupt: rebuild or re-export the image."},
			"manifest %s lists %d layers but its config has %d diff IDs", digest, len(m.Layers), len(cfg.RootFS.DiffIDs))
	}
	img := &Image{
		Digest:       digest,
		Platform:     have,
		Manifest:     m,
		RawManifest:  rawManifest,
		ConfigDigest: cfgDigest,
		Config:       cfg,
		RawConfig:    rawConfig,
	}
	for i, l := range m.Layers {
		what := LayerName(i, len(m.Layers), l.Digest.String())
		comp, err := compressionOf(l.MediaType, what)
		if err != nil {
			return nil, err
		}
		if len(l.URLs) > 0 {
			return nil, hint.New(nil, []string{"Layers fetched from external URLs are not supported; use an image whose layers are all in the registry."},
				"%s must be fetched from an external URL (%s)", what, strings.Join(l.URLs, ", "))
		}
		if err := blob.CheckAlgorithm(l.Digest, what); err != nil {
			return nil, err
		}
		if l.Size < 0 {
			return nil, hint.New(nil, nil, "%s has a negative size", what)
		}
		if err := blob.CheckAlgorithm(cfg.RootFS.DiffIDs[i], what+" diff ID"); err != nil {
			return nil, err
		}
		img.layers = append(img.layers, l)
		img.Layers = append(img.Layers, Layer{
			Index: i, Digest: l.Digest, DiffID: cfg.RootFS.DiffIDs[i], MediaType: l.MediaType, Size: l.Size, Compression: comp,
		})
	}
	return img, nil
}

// selectByRefName filters top-level layout entries by reference name. With
// name "" it returns all entries, unless they carry several distinct
// reference names, which is ambiguous.
func selectByRefName(entries []v1.Descriptor, refName, where string) ([]v1.Descriptor, error) {
	var names []string
	seen := map[string]bool{}
	for _, d := range entries {
		for _, k := range []string{annotationRefName, annotationImageName} {
			if n := d.Annotations[k]; n != "" && !seen[n] && (k == annotationRefName || d.Annotations[annotationRefName] == "") {
				seen[n] = true
				names = append(names, n)
			}
		}
	}
	sort.Strings(names)
	if refName == "" {
		if len(names) > 1 {
			return nil, hint.New(nil, []string{
				fmt.Sprintf("Select one: %s:REF (or the reference name option), with REF one of: %s.", where, strings.Join(names, ", ")),
			}, "%s holds several images; available refs: %s", where, strings.Join(names, ", "))
		}
		return entries, nil
	}
	var out []v1.Descriptor
	for _, d := range entries {
		if d.Annotations[annotationRefName] == refName || d.Annotations[annotationImageName] == refName {
			out = append(out, d)
		}
	}
	if len(out) == 0 {
		avail := "none (its index.json has no " + annotationRefName + " annotations)"
		if len(names) > 0 {
			avail = strings.Join(names, ", ")
		}
		return nil, hint.New(nil, []string{"Use one of the available refs: " + avail + "."},
			"%s has no image named %q; available refs: %s", where, refName, avail)
	}
	return out, nil
}
