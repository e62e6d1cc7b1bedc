// Package imagetest builds container images for tests: layers from tar
// bytes (gzip, zstd or none), images and multi-platform indexes with
// Docker or OCI media types, and the forms they are read from (an OCI
// layout, an OCI archive, docker save archives old and new), plus a small
// busybox image that runs in a guest.
package imagetest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"

	"github.com/docker2vm/docker2vm/internal/testenv"
	"github.com/docker2vm/docker2vm/internal/testtar"
)

// Compression of a test layer.
type Compression string

const (
	Gzip Compression = "gzip"
	Zstd Compression = "zstd"
	None Compression = "none"
)

// Layer is a v1.Layer over in-memory bytes.
type Layer struct {
	Raw, Tar []byte
	MT       types.MediaType
}

func digestOf(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

func (l *Layer) Digest() (v1.Hash, error)           { return digestOf(l.Raw), nil }
func (l *Layer) DiffID() (v1.Hash, error)           { return digestOf(l.Tar), nil }
func (l *Layer) Compressed() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(l.Raw)), nil }
func (l *Layer) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.Tar)), nil
}
func (l *Layer) Size() (int64, error)                { return int64(len(l.Raw)), nil }
func (l *Layer) MediaType() (types.MediaType, error) { return l.MT, nil }

// NewLayer compresses tarBytes; oci selects OCI media types (else Docker;
// zstd and none are always OCI media types).
func NewLayer(t testenv.TB, tarBytes []byte, c Compression, oci bool) *Layer {
	t.Helper()
	l := &Layer{Tar: tarBytes}
	switch c {
	case Gzip:
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write(tarBytes)
		zw.Close()
		l.Raw = b.Bytes()
		l.MT = types.DockerLayer
		if oci {
			l.MT = types.OCILayer
		}
	case Zstd:
		zw, err := zstd.NewWriter(nil)
		if err != nil {
			t.Fatal(err)
		}
		l.Raw = zw.EncodeAll(tarBytes, nil)
		zw.Close()
		l.MT = types.OCILayerZStd
	default:
		l.Raw = tarBytes
		l.MT = types.OCIUncompressedLayer
	}
	return l
}

// Spec describes a test image.
type Spec struct {
	Platform v1.Platform // default linux/amd64
	OCI      bool        // OCI media types (else Docker schema 2)
	Layers   []v1.Layer  // default: two small gzip layers
	Env      []string
}

// New builds an image from spec.
func New(t testenv.TB, spec Spec) v1.Image {
	t.Helper()
	p := spec.Platform
	if p.OS == "" {
		p = v1.Platform{OS: "linux", Architecture: "amd64"}
	}
	if spec.Layers == nil {
		tag := p.Architecture + p.Variant
		spec.Layers = []v1.Layer{
			NewLayer(t, testtar.Build(t, testtar.Dir("etc/"), testtar.File("etc/arch", tag+"\n")), Gzip, spec.OCI),
			NewLayer(t, testtar.Build(t, testtar.Dir("bin/"), testtar.File("bin/hello", "#!/bin/sh\necho hi "+tag+"\n").Mode(0o755)), Gzip, spec.OCI),
		}
	}
	base := empty.Image
	if spec.OCI {
		base = mutate.MediaType(base, types.OCIManifestSchema1)
		base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	}
	var adds []mutate.Addendum
	for _, l := range spec.Layers {
		mt, _ := l.MediaType()
		adds = append(adds, mutate.Addendum{Layer: l, MediaType: mt})
	}
	img, err := mutate.Append(base, adds...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Config.Env = spec.Env
	cf.Config.Cmd = []string{"/bin/hello"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// IndexSpec describes a multi-platform index.
type IndexSpec struct {
	Images      []v1.Image // each annotated with the platform of its config
	Attestation bool       // add a BuildKit-style attestation manifest (unknown/unknown)
	OCI         bool
}

// NewIndex builds an index of images, each entry carrying its platform.
func NewIndex(t testenv.TB, spec IndexSpec) v1.ImageIndex {
	t.Helper()
	var idx v1.ImageIndex = empty.Index
	if spec.OCI {
		idx = mutate.IndexMediaType(idx, types.OCIImageIndex)
	} else {
		idx = mutate.IndexMediaType(idx, types.DockerManifestList)
	}
	var adds []mutate.IndexAddendum
	for _, img := range spec.Images {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		p := cf.Platform()
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: p}})
	}
	if spec.Attestation && len(spec.Images) > 0 {
		d, err := spec.Images[0].Digest()
		if err != nil {
			t.Fatal(err)
		}
		att := New(t, Spec{OCI: true, Platform: v1.Platform{OS: "unknown", Architecture: "unknown"},
			Layers: []v1.Layer{NewLayer(t, []byte(`{"predicateType":"https://slsa.dev/provenance/v0.2"}`), None, true)}})
		adds = append(adds, mutate.IndexAddendum{Add: att, Descriptor: v1.Descriptor{
			Platform:    &v1.Platform{OS: "unknown", Architecture: "unknown"},
			Annotations: map[string]string{"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": d.String()},
		}})
	}
	return mutate.AppendManifests(idx, adds...)
}

// LayoutEntry is one top-level entry of a test OCI layout.
type LayoutEntry struct {
	Image   v1.Image      // or
	Index   v1.ImageIndex // one of the two
	RefName string        // org.opencontainers.image.ref.name, optional
	// Platform annotates the index.json entry, optional.
	Platform *v1.Platform
}

// WriteLayout writes an OCI image layout into dir (created if needed).
func WriteLayout(t testenv.TB, dir string, entries ...LayoutEntry) string {
	t.Helper()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		var opts []layout.Option
		if e.RefName != "" {
			opts = append(opts, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": e.RefName}))
		}
		if e.Platform != nil {
			opts = append(opts, layout.WithPlatform(*e.Platform))
		}
		if e.Image != nil {
			err = p.AppendImage(e.Image, opts...)
		} else {
			err = p.AppendIndex(e.Index, opts...)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// WriteOCIArchive tars the layout in dir into out (gzip-compressed when
// compress is set), the way `docker buildx --output type=oci` does.
func WriteOCIArchive(t testenv.TB, dir, out string, compress bool) string {
	t.Helper()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var w io.Writer = f
	var zw *gzip.Writer
	if compress {
		zw = gzip.NewWriter(f)
		w = zw
	}
	tw := tar.NewWriter(w)
	var names []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if p != dir {
			names = append(names, p)
		}
		return nil
	})
	sort.Strings(names)
	for _, p := range names {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(dir, p)
		h, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			t.Fatal(err)
		}
		h.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			tw.Write(b)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// WriteDockerSave writes a docker-save style archive with go-containerregistry
// (layers stored compressed as <digest>.tar.gz, config as sha256:<hex>).
func WriteDockerSave(t testenv.TB, out string, images map[string]v1.Image) string {
	t.Helper()
	m := map[name.Reference]v1.Image{}
	for tag, img := range images {
		ref, err := name.NewTag(tag)
		if err != nil {
			t.Fatal(err)
		}
		m[ref] = img
	}
	if err := tarball.MultiRefWriteToFile(out, m); err != nil {
		t.Fatal(err)
	}
	return out
}

// WriteLegacyDockerSave writes an archive in the layout of `docker save`
// before Docker 25: <n>/layer.tar holding the uncompressed layer,
// <confighex>.json, manifest.json and repositories; a repeated layer is a
// symlink to the first copy, as Docker writes it.
func WriteLegacyDockerSave(t testenv.TB, out string, img v1.Image, tag string) string {
	t.Helper()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	add := func(name string, b []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}); err != nil {
			t.Fatal(err)
		}
		tw.Write(b)
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfgName := digestOf(cfg).Hex + ".json"
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	first := map[v1.Hash]string{}
	for i, l := range layers {
		d, _ := l.DiffID()
		dir := fmt.Sprintf("%064x", i+1)
		name := dir + "/layer.tar"
		names = append(names, name)
		if prev, ok := first[d]; ok {
			tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: "../" + prev, Mode: 0o777})
			continue
		}
		first[d] = name
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		tw.WriteHeader(&tar.Header{Name: dir + "/", Typeflag: tar.TypeDir, Mode: 0o755})
		add(name, b)
	}
	add(cfgName, cfg)
	mf, _ := json.Marshal([]map[string]any{{"Config": cfgName, "RepoTags": []string{tag}, "Layers": names}})
	add("manifest.json", mf)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

// WithConfig returns img with its runtime config edited.
func WithConfig(t testenv.TB, img v1.Image, edit func(*v1.Config)) v1.Image {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	edit(&cf.Config)
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// WithLayer returns img with layer added on top.
func WithLayer(t testenv.TB, img v1.Image, layer v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(img, layer)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// Busybox is a two-layer image: busybox with its applets and an
// /etc/passwd, then an app directory; with ENV, WORKDIR, ENTRYPOINT and CMD
// so the guest's docker2vm-entrypoint has something to honour. Its
// platform is linux/<the busybox binary's architecture>
// (gondolintest.BaseBusybox of an arm64 base makes a linux/arm64 image).
func Busybox(t testenv.TB, busybox []byte) v1.Image {
	t.Helper()
	arch := testenv.ArchOfELF(busybox)
	if arch == "" {
		t.Fatal("imagetest.Busybox: busybox is not an amd64 or arm64 ELF binary")
	}
	entries := []testtar.Entry{
		testtar.Dir("bin/"),
		testtar.FileBytes("bin/busybox", busybox).Mode(0o755),
	}
	for _, a := range []string{"sh", "ls", "cat", "echo", "id", "mkdir", "mount", "pwd", "touch", "rm", "env", "grep", "stat", "uname", "df", "head"} {
		entries = append(entries, testtar.Symlink("bin/"+a, "busybox"))
	}
	entries = append(entries,
		testtar.Dir("etc/"),
		testtar.File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
		testtar.File("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
		testtar.File("etc/os-release", "NAME=\"docker2vm sample\"\nID=busybox\n"))
	app := []testtar.Entry{
		testtar.Dir("srv/"),
		testtar.File("srv/app.sh", "#!/bin/sh\necho \"app says $GREETING from $(pwd) as $(id -u) with $*\"\n").Mode(0o755),
	}
	img := New(t, Spec{OCI: true, Platform: v1.Platform{OS: "linux", Architecture: arch},
		Env:    []string{"PATH=/usr/local/bin:/usr/bin:/bin", "GREETING=hello busybox"},
		Layers: []v1.Layer{NewLayer(t, testtar.Build(t, entries...), Gzip, true), NewLayer(t, testtar.Build(t, app...), Zstd, true)}})
	return WithConfig(t, img, func(c *v1.Config) {
		c.WorkingDir = "/srv"
		c.Entrypoint = []string{"/srv/app.sh"}
		c.Cmd = []string{"default-arg"}
	})
}
