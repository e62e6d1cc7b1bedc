// Package image turns a source reference (a registry image, an OCI image
// layout directory, an OCI archive or a `docker save` archive) into a
// verified image for one platform: its manifest, config and layers, with
// every byte checked against its digest while it streams. Registry blobs go
// through a content-addressed cache (see Options.CacheDir).
package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/image/internal/blob"
	"github.com/docker2vm/docker2vm/image/internal/registry"
)

// Options configure Resolve.
type Options struct {
	// Platform to select: linux/amd64 or linux/arm64 (a variant is allowed).
	// The zero value means HostPlatform().
	Platform Platform
	// CacheDir is the cache root; blobs live in CacheDir/blobs/sha256/<hex>.
	// "" means DefaultCacheDir.
	CacheDir string
	// NoCache streams registry blobs without reading or writing the cache.
	NoCache bool
	// InsecureRegistries are registries (host or host:port) to reach over
	// plain HTTP. Loopback registries always are.
	InsecureRegistries []string
	// Keychain finds registry credentials; nil means authn.DefaultKeychain
	// (the Docker config in $DOCKER_CONFIG or ~/.docker, and its credential
	// helpers).
	Keychain authn.Keychain
	// Progress receives human progress (stderr); nil means none. Blob
	// downloads show a progress bar when it is a terminal, plain lines
	// otherwise.
	Progress io.Writer
	// PlainProgress reports downloads as lines even on a terminal (where
	// they are bars by default): --progress plain.
	PlainProgress bool
	// RefName selects the image in a layout or archive holding several:
	// the org.opencontainers.image.ref.name annotation (or the full
	// io.containerd.image.name) of an OCI index entry, or a RepoTags entry
	// of a docker-save archive. It overrides a ":REFNAME" suffix of
	// Source.Ref.
	RefName string
	// MaxArchiveSize bounds the decompressed size of a gzip- or
	// zstd-compressed --oci-tar archive (it is decompressed to a temporary
	// file): a guard against decompression bombs. 0 means 1 TiB.
	MaxArchiveSize int64
	// MaxLayers bounds the number of layers of the image, checked on its
	// manifest before any layer is read: a guard against hostile images.
	// 0 means DefaultMaxLayers.
	MaxLayers int
	// StallTimeout fails a registry request that receives nothing for
	// this long (connecting, waiting for the answer, or reading it); the
	// request is retried like a dropped connection. 0 means
	// $DOCKER2VM_STALL_TIMEOUT (a Go duration such as 90s), else
	// DefaultStallTimeout.
	StallTimeout time.Duration
	// ParallelDownloads is how many transfers from a registry run at
	// once (layers, and segments of large layers), while the layers
	// before them are applied (see OpenLayer). 0 means
	// $DOCKER2VM_PARALLEL_DOWNLOADS, else DefaultParallelDownloads; 1
	// downloads one layer at a time, each in one request.
	ParallelDownloads int

	// retry, when set, replaces the retry counts and waits (tests).
	retry *registry.Policy
	// segmentSize, when set, is the size of the segments layers are
	// downloaded in, however small (tests).
	segmentSize int64
}

// DefaultMaxLayers is the layer limit when Options.MaxLayers is 0.
const DefaultMaxLayers = 1000

func (o Options) maxLayers() int {
	if o.MaxLayers <= 0 {
		return DefaultMaxLayers
	}
	return o.MaxLayers
}

// checkLayerCount refuses more than max layers.
func checkLayerCount(n, max int, what string) error {
	if n > max {
		return hint.New(nil, []string{
			fmt.Sprintf("If the image is trusted, raise the limit with --max-layers %d.", n),
			"Real images have tens of layers, rarely more than 127 (what overlayfs-based runtimes such as Docker stack); this many may be a hostile image.",
		}, "%s has %d layers, more than the limit of %d", what, n, max)
	}
	return nil
}

// Image is a resolved image for one platform. Close it when done.
type Image struct {
	Source Source
	// Digest is the manifest digest of the selected platform image. For a
	// legacy `docker save` archive (no index.json) it is the digest of the
	// Docker schema 2 manifest synthesized from the archive (RawManifest).
	Digest v1.Hash
	// IndexDigest is the digest of the image index the manifest was chosen
	// from (the outermost one), when the source was an index. An OCI
	// layout's index.json has no digest and is not reported here.
	IndexDigest *v1.Hash
	// Platform is the platform of the selected image, from its config (the
	// variant from the index when the config has none).
	Platform Platform
	// RefName is the reference name the image was selected by, if any.
	RefName      string
	Manifest     *v1.Manifest
	RawManifest  []byte
	ConfigDigest v1.Hash
	Config       *v1.ConfigFile
	RawConfig    []byte
	Layers       []Layer

	store  blob.Store
	layers []v1.Descriptor
	names  []string // layerName's, for the store
}

// Layer describes one layer of the image, bottom first.
type Layer struct {
	Index     int
	Digest    v1.Hash // digest of the blob as stored (compressed)
	DiffID    v1.Hash // digest of the uncompressed tar, from the config
	MediaType types.MediaType
	Size      int64 // size of the blob as stored
	// Compression is what the media type says ("gzip", "zstd" or "none";
	// sniffed for docker-save layers). OpenLayer decompresses by the
	// stream's magic bytes, so a mislabelled gzip layer still works.
	Compression string
}

// Resolve finds the image src names for opts.Platform, fetches and verifies
// its manifest and config, and returns it ready for OpenLayer.
func Resolve(ctx context.Context, src Source, opts Options) (*Image, error) {
	plat, err := validatePlatform(opts.Platform)
	if err != nil {
		return nil, err
	}
	opts.Platform = plat
	if opts.Keychain == nil {
		opts.Keychain = authn.DefaultKeychain
	}
	if !opts.NoCache {
		if opts.CacheDir, err = opts.CacheRoot(); err != nil {
			return nil, err
		}
	}
	if strings.TrimSpace(src.Ref) == "" {
		return nil, hint.New(nil, []string{"Pass an image reference or a path."}, "empty %s source", src.Kind)
	}
	info, ok := src.Kind.Info()
	if !ok {
		return nil, hint.New(nil, []string{"Use " + kindFlags("or") + "."}, "unknown source kind %q", src.Kind)
	}
	img, err := info.resolve(ctx, src, opts)
	if err != nil {
		return nil, err
	}
	img.Source = src
	return img, nil
}

// CacheRoot returns the cache root: CacheDir, else DefaultCacheDir.
func (o Options) CacheRoot() (string, error) {
	if o.CacheDir != "" {
		return o.CacheDir, nil
	}
	return DefaultCacheDir()
}

// DefaultCacheDir returns the user cache directory's docker2vm
// (os.UserCacheDir): $XDG_CACHE_HOME/docker2vm, else ~/.cache/docker2vm;
// on macOS ~/Library/Caches/docker2vm.
func DefaultCacheDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", hint.New(err, []string{"Set XDG_CACHE_HOME or HOME, or pass --no-cache."}, "cannot find a cache directory")
	}
	return filepath.Join(d, "docker2vm"), nil
}

// Close releases what the image holds open (archive files, temporary
// files). Layer streams already open keep working until closed only for
// registry and layout sources.
func (img *Image) Close() error {
	if img == nil || img.store == nil {
		return nil
	}
	err := img.store.Close()
	img.store = nil
	return err
}

// setStore makes st serve the image's blobs, and names its layers for
// the store's messages ("layer 2/5 sha256:abc…").
func (img *Image) setStore(st blob.Store) {
	img.store = st
	img.names = make([]string, len(img.layers))
	for i, d := range img.layers {
		img.names[i] = LayerName(i, len(img.layers), d.Digest.String())
	}
}

// LayerName names layer i (0-based) of n the way every message and
// progress line does: "layer 2/5 sha256:abc…", counting from 1.
func LayerName(i, n int, digest string) string {
	return fmt.Sprintf("layer %d/%d %s", i+1, n, digest)
}

// OpenLayer returns layer i's uncompressed tar stream. The stored bytes are
// verified against the layer digest and size while they stream, and the
// uncompressed bytes against the DiffID; a mismatch is returned by Read at
// EOF (instead of io.EOF) or by Close, naming the layer. Close reads what
// the caller left unread (a tar reader stops at the end-of-archive marker)
// to finish the checks, unless ctx is done. A caller that stops for a
// reason of its own (a limit) releases the stream with AbortLayer instead:
// nothing more is downloaded or decompressed. A registry transfer that
// fails for good is an ErrNetwork error from Read (and Close), never a
// digest mismatch.
//
// For a registry image, the first call starts downloading the layers in
// the background, Options.ParallelDownloads at a time and in order, so
// that the next layers arrive while this one is read; a layer whose
// download failed for good, or any other download's such failure, fails
// the stream of the layer being read. The downloads stop when ctx is done
// or the image is closed.
func (img *Image) OpenLayer(ctx context.Context, i int) (io.ReadCloser, error) {
	if img.store == nil {
		return nil, errors.New("image is closed")
	}
	if i < 0 || i >= len(img.layers) {
		return nil, fmt.Errorf("layer %d out of range: the image has %d layers", i, len(img.layers))
	}
	desc := img.layers[i]
	what := img.names[i]
	// Local blobs (layouts, archives) are verified while they stream, like
	// registry blobs: hashing a whole blob before handing out a byte would
	// read it twice. A consumer that fails on a corrupt layer (a tar error)
	// should prefer Close's verdict, which finishes the digest checks;
	// convert.Run does, and writes into a staging directory it discards on
	// any error, so nothing unverified is ever published.
	lctx, cancel := context.WithCancel(ctx) // the stream's own, for Abort
	raw, err := img.store.Layer(ctx, lctx, img.layers, img.names, i)
	if err != nil {
		cancel()
		return nil, err
	}
	lr, err := newLayerReader(ctx, cancel, raw, desc, img.Layers[i].DiffID, what)
	if err != nil {
		return nil, err
	}
	return lr, nil
}

// compressionOf maps a layer media type to its compression, or returns an
// error naming the layer for media types we cannot apply.
func compressionOf(mt types.MediaType, what string) (string, error) {
	switch mt {
	case types.OCILayer, types.DockerLayer, "application/vnd.docker.image.rootfs.diff.tar+gzip":
		return "gzip", nil
	case types.OCILayerZStd:
		return "zstd", nil
	case types.OCIUncompressedLayer, "application/vnd.docker.image.rootfs.diff.tar":
		return "none", nil
	case types.DockerForeignLayer, types.OCIRestrictedLayer, types.OCIUncompressedRestrictedLayer,
		"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd":
		return "", hint.New(nil, []string{
			"Foreign/non-distributable layers (e.g. Windows base layers) cannot be converted; use a Linux image whose layers are all in the registry.",
		}, "%s has media type %s (a foreign, non-distributable layer), which is not supported", what, mt)
	}
	return "", hint.New(nil, []string{
		"Supported layer media types: application/vnd.oci.image.layer.v1.tar[+gzip|+zstd] and application/vnd.docker.image.rootfs.diff.tar[.gzip].",
		"The reference may name an artifact (Helm chart, signature, SBOM) rather than a container image.",
	}, "%s has unsupported media type %q", what, mt)
}

func isIndexType(mt types.MediaType) bool {
	return mt == types.OCIImageIndex || mt == types.DockerManifestList
}

func isManifestType(mt types.MediaType) bool {
	return mt == types.OCIManifestSchema1 || mt == types.DockerManifestSchema2
}
