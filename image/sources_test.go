package image

import (
	"archive/tar"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/docker2vm/docker2vm/hint"
	tarfs "github.com/docker2vm/docker2vm/image/internal/archive"
	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/testenv"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
	"github.com/docker2vm/docker2vm/internal/testtar"
)

var (
	amd64   = v1.Platform{OS: "linux", Architecture: "amd64"}
	arm64   = v1.Platform{OS: "linux", Architecture: "arm64"}
	arm64v8 = v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	armv7   = v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}
)

// readFiles opens every layer in order and returns path -> content of the
// regular files (later layers win).
func readFiles(t *testing.T, img *Image) map[string]string {
	t.Helper()
	files, err := tryReadFiles(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func tryReadFiles(ctx context.Context, img *Image) (map[string]string, error) {
	files := map[string]string{}
	for i := range img.Layers {
		if err := readLayerFiles(ctx, img, i, files); err != nil {
			return nil, err
		}
	}
	return files, nil
}

// readLayerFiles adds layer i's regular files to files, reading it as a
// well-behaved consumer does: on a broken stream Close's verdict comes
// first, as Close finishes the digest checks.
func readLayerFiles(ctx context.Context, img *Image, i int, files map[string]string) error {
	rc, err := img.OpenLayer(ctx, i)
	if err != nil {
		return err
	}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		var b []byte
		if err == nil && h.Typeflag == tar.TypeReg {
			b, err = io.ReadAll(tr)
			files[h.Name] = string(b)
		}
		if err != nil {
			if cerr := rc.Close(); cerr != nil {
				return cerr
			}
			return err
		}
	}
	return rc.Close()
}

func resolveT(t *testing.T, kind SourceKind, ref string, opts Options) *Image {
	t.Helper()
	if opts.CacheDir == "" && !opts.NoCache {
		opts.CacheDir = t.TempDir()
	}
	img, err := Resolve(context.Background(), Source{Kind: kind, Ref: ref}, opts)
	if err != nil {
		t.Fatalf("Resolve(%s %s): %v", kind, ref, err)
	}
	t.Cleanup(func() { img.Close() })
	return img
}

func multiArchIndex(t *testing.T, oci bool) (v1.ImageIndex, map[string]v1.Image) {
	imgs := map[string]v1.Image{
		"amd64": imagetest.New(t, imagetest.Spec{Platform: amd64, OCI: oci}),
		"arm64": imagetest.New(t, imagetest.Spec{Platform: arm64v8, OCI: oci}),
		"armv7": imagetest.New(t, imagetest.Spec{Platform: armv7, OCI: oci}),
	}
	idx := imagetest.NewIndex(t, imagetest.IndexSpec{Images: []v1.Image{imgs["armv7"], imgs["amd64"], imgs["arm64"]}, Attestation: true, OCI: oci})
	return idx, imgs
}

func TestPlatformSelection(t *testing.T) {
	idx, imgs := multiArchIndex(t, true)
	dir := imagetest.WriteLayout(t, t.TempDir(), imagetest.LayoutEntry{Index: idx})
	idxDigest, _ := idx.Digest()
	tests := []struct {
		want     v1.Platform
		image    string
		platform string
	}{
		{amd64, "amd64", "linux/amd64"},
		{arm64, "arm64", "linux/arm64/v8"},
		{arm64v8, "arm64", "linux/arm64/v8"},
	}
	for _, tc := range tests {
		t.Run(platformString(tc.want), func(t *testing.T) {
			img := resolveT(t, KindOCILayout, dir, Options{Platform: tc.want})
			wantDigest, _ := imgs[tc.image].Digest()
			if img.Digest != wantDigest {
				t.Errorf("digest %s, want %s", img.Digest, wantDigest)
			}
			if img.IndexDigest == nil || *img.IndexDigest != idxDigest {
				t.Errorf("IndexDigest = %v, want %s", img.IndexDigest, idxDigest)
			}
			if got := platformString(img.Platform); got != tc.platform {
				t.Errorf("platform %s, want %s", got, tc.platform)
			}
			files := readFiles(t, img)
			if !strings.HasPrefix(files["etc/arch"], tc.want.Architecture) {
				t.Errorf("etc/arch = %q", files["etc/arch"])
			}
		})
	}

	t.Run("miss lists platforms, attestation ignored", func(t *testing.T) {
		idx := imagetest.NewIndex(t, imagetest.IndexSpec{Images: []v1.Image{imgs["armv7"], imgs["arm64"]}, Attestation: true, OCI: true})
		dir := imagetest.WriteLayout(t, t.TempDir(), imagetest.LayoutEntry{Index: idx})
		_, err := Resolve(context.Background(), Source{Kind: KindOCILayout, Ref: dir}, Options{Platform: amd64, NoCache: true})
		testenv.WantErr(t, err, "no linux/amd64 variant", "linux/arm/v7, linux/arm64/v8")
		if strings.Contains(err.Error(), "unknown") {
			t.Errorf("attestation listed as a platform: %v", err)
		}
		if !strings.Contains(strings.Join(hint.Of(err), "\n"), "--platform linux/arm64") {
			t.Errorf("hints do not suggest linux/arm64: %q", strings.Join(hint.Of(err), "\n"))
		}
	})
	t.Run("single-platform mismatch", func(t *testing.T) {
		dir := imagetest.WriteLayout(t, t.TempDir(), imagetest.LayoutEntry{Image: imgs["arm64"]})
		_, err := Resolve(context.Background(), Source{Kind: KindOCILayout, Ref: dir}, Options{Platform: amd64, NoCache: true})
		testenv.WantErr(t, err, "image is linux/arm64/v8 but --platform is linux/amd64; pass --platform linux/arm64 or choose another image")
	})
	t.Run("nested index", func(t *testing.T) {
		inner := imagetest.NewIndex(t, imagetest.IndexSpec{Images: []v1.Image{imgs["amd64"], imgs["arm64"]}, OCI: true})
		dir := imagetest.WriteLayout(t, t.TempDir(), imagetest.LayoutEntry{Index: inner, RefName: "v1"})
		img := resolveT(t, KindOCILayout, dir, Options{Platform: arm64})
		if d, _ := imgs["arm64"].Digest(); img.Digest != d {
			t.Errorf("nested index: got %s", img.Digest)
		}
		innerDigest, _ := inner.Digest()
		if img.IndexDigest == nil || *img.IndexDigest != innerDigest {
			t.Errorf("IndexDigest = %v", img.IndexDigest)
		}
	})
	t.Run("docker manifest list", func(t *testing.T) {
		idx, imgs := multiArchIndex(t, false)
		dir := imagetest.WriteLayout(t, t.TempDir(), imagetest.LayoutEntry{Index: idx})
		img := resolveT(t, KindOCILayout, dir, Options{Platform: amd64})
		if d, _ := imgs["amd64"].Digest(); img.Digest != d {
			t.Errorf("got %s", img.Digest)
		}
	})
}

func TestLayerMediaTypes(t *testing.T) {
	content := testtar.Build(t, testtar.File("f", "data"))
	for _, tc := range []struct {
		name string
		c    imagetest.Compression
		oci  bool
	}{{"oci gzip", imagetest.Gzip, true}, {"docker gzip", imagetest.Gzip, false}, {"zstd", imagetest.Zstd, true}, {"uncompressed", imagetest.None, true}} {
		t.Run(tc.name, func(t *testing.T) {
			l := imagetest.NewLayer(t, content, tc.c, tc.oci)
			img := imagetest.New(t, imagetest.Spec{OCI: tc.oci, Layers: []v1.Layer{l}})
			dir := imagetest.WriteLayout(t, t.TempDir(), imagetest.LayoutEntry{Image: img})
			got := resolveT(t, KindOCILayout, dir, Options{Platform: amd64})
			if got.Layers[0].MediaType != l.MT || got.Layers[0].Compression != string(tc.c) {
				t.Errorf("layer %+v", got.Layers[0])
			}
			if files := readFiles(t, got); files["f"] != "data" {
				t.Errorf("files = %v", files)
			}
		})
	}
	t.Run("gzip labelled uncompressed is sniffed", func(t *testing.T) {
		l := imagetest.NewLayer(t, content, imagetest.Gzip, true)
		l.MT = "application/vnd.oci.image.layer.v1.tar"
		img := imagetest.New(t, imagetest.Spec{OCI: true, Layers: []v1.Layer{l}})
		dir := imagetest.WriteLayout(t, t.TempDir(), imagetest.LayoutEntry{Image: img})
		if files := readFiles(t, resolveT(t, KindOCILayout, dir, Options{Platform: amd64})); files["f"] != "data" {
			t.Errorf("files = %v", files)
		}
	})
	for _, mt := range []string{"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "application/vnd.cncf.helm.chart.content.v1.tar+gzip"} {
		t.Run(mt, func(t *testing.T) {
			l := imagetest.NewLayer(t, content, imagetest.Gzip, true)
			l.MT = typesMT(mt)
			img := imagetest.New(t, imagetest.Spec{OCI: true, Layers: []v1.Layer{l}})
			dir := imagetest.WriteLayout(t, t.TempDir(), imagetest.LayoutEntry{Image: img})
			_, err := Resolve(context.Background(), Source{Kind: KindOCILayout, Ref: dir}, Options{Platform: amd64, NoCache: true})
			d, _ := l.Digest()
			testenv.WantErr(t, err, "layer 1/1 "+d.String(), mt)
		})
	}
}

func TestLayoutRefNames(t *testing.T) {
	a := imagetest.New(t, imagetest.Spec{Env: []string{"WHO=a"}})
	b := imagetest.New(t, imagetest.Spec{Env: []string{"WHO=b"}})
	parent := filepath.Join(t.TempDir(), "with:colon")
	dir := imagetest.WriteLayout(t, parent, imagetest.LayoutEntry{Image: a, RefName: "a"}, imagetest.LayoutEntry{Image: b, RefName: "b"})
	for _, tc := range []struct {
		ref, opt, env string
	}{{dir + ":a", "", "WHO=a"}, {dir + ":b", "", "WHO=b"}, {dir, "b", "WHO=b"}, {dir + ":a", "b", "WHO=b"}} {
		img := resolveT(t, KindOCILayout, tc.ref, Options{Platform: amd64, RefName: tc.opt})
		if got := img.Config.Config.Env; len(got) != 1 || got[0] != tc.env {
			t.Errorf("%s (RefName %q): env %v, want %s", tc.ref, tc.opt, got, tc.env)
		}
	}
	_, err := Resolve(context.Background(), Source{Kind: KindOCILayout, Ref: dir}, Options{Platform: amd64, NoCache: true})
	testenv.WantErr(t, err, "holds several images", "available refs: a, b")
	_, err = Resolve(context.Background(), Source{Kind: KindOCILayout, Ref: dir + ":c"}, Options{Platform: amd64, NoCache: true})
	testenv.WantErr(t, err, `no image named "c"`, "available refs: a, b")
}

func typesMT(s string) types.MediaType { return types.MediaType(s) }

// flip changes one byte of a file at off (negative: from the end).
func flip(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if off < 0 {
		fi, _ := f.Stat()
		off += fi.Size()
	}
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// flipMember flips a byte in the middle of a member of a plain tar.
func flipMember(t *testing.T, archive, member string) {
	t.Helper()
	tf, err := tarfs.Open(context.Background(), archive, tarfs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sr, ok := tf.Section(member)
	tf.Close()
	if !ok {
		t.Fatalf("no member %s in %s", member, archive)
	}
	_, off, size := sr.Outer()
	flip(t, archive, off+size/2)
}

func layerDigest(t *testing.T, img v1.Image, i int) v1.Hash {
	ls, _ := img.Layers()
	d, _ := ls[i].Digest()
	return d
}

func TestOCIArchives(t *testing.T) {
	require.Integration(t, "writes OCI archives")
	idx, imgs := multiArchIndex(t, true)
	other := imagetest.New(t, imagetest.Spec{Env: []string{"WHO=other"}})
	layoutDir := imagetest.WriteLayout(t, t.TempDir(), imagetest.LayoutEntry{Index: idx, RefName: "multi"}, imagetest.LayoutEntry{Image: other, RefName: "other"})
	for _, gz := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "gzip"}[gz]
		t.Run(name, func(t *testing.T) {
			cache := t.TempDir()
			archive := imagetest.WriteOCIArchive(t, layoutDir, filepath.Join(t.TempDir(), "img.tar"), gz)
			img := resolveT(t, KindOCIArchive, archive+":multi", Options{Platform: arm64, CacheDir: cache})
			if d, _ := imgs["arm64"].Digest(); img.Digest != d {
				t.Errorf("digest %s", img.Digest)
			}
			if files := readFiles(t, img); files["etc/arch"] != "arm64v8\n" {
				t.Errorf("files %v", files)
			}
			if gz {
				tmps, _ := filepath.Glob(filepath.Join(cache, "tmp", "docker2vm-archive-*"))
				if len(tmps) != 1 {
					t.Errorf("want one decompressed temp file, have %v", tmps)
				}
				img.Close()
				tmps, _ = filepath.Glob(filepath.Join(cache, "tmp", "docker2vm-archive-*"))
				if len(tmps) != 0 {
					t.Errorf("temp file not removed on Close: %v", tmps)
				}
			}
			img2 := resolveT(t, KindOCIArchive, archive, Options{Platform: amd64, RefName: "other", NoCache: true})
			if img2.Config.Config.Env[0] != "WHO=other" {
				t.Errorf("env %v", img2.Config.Config.Env)
			}
			_, err := Resolve(context.Background(), Source{Kind: KindOCIArchive, Ref: archive}, Options{Platform: amd64, NoCache: true})
			testenv.WantErr(t, err, "available refs: multi, other")
		})
	}
}

func TestDockerSaveArchives(t *testing.T) {
	require.Integration(t, "writes docker save archives")
	a := imagetest.New(t, imagetest.Spec{Env: []string{"WHO=a"}})
	b := imagetest.New(t, imagetest.Spec{Platform: arm64, Env: []string{"WHO=b"}})
	t.Run("ggcr tarball", func(t *testing.T) {
		p := imagetest.WriteDockerSave(t, filepath.Join(t.TempDir(), "save.tar"), map[string]v1.Image{"example.com/a:1": a, "example.com/b:2": b})
		_, err := Resolve(context.Background(), Source{Kind: KindOCIArchive, Ref: p}, Options{Platform: amd64, NoCache: true})
		testenv.WantErr(t, err, "holds 2 images", "example.com/a:1", "example.com/b:2")
		img := resolveT(t, KindOCIArchive, p+":example.com/a:1", Options{Platform: amd64})
		if img.Config.Config.Env[0] != "WHO=a" || img.Layers[0].Compression != "gzip" {
			t.Errorf("got %v %+v", img.Config.Config.Env, img.Layers[0])
		}
		if files := readFiles(t, img); files["bin/hello"] == "" {
			t.Errorf("files %v", files)
		}
		_, err = Resolve(context.Background(), Source{Kind: KindOCIArchive, Ref: p}, Options{Platform: amd64, RefName: "example.com/b:2", NoCache: true})
		testenv.WantErr(t, err, "image is linux/arm64 but --platform is linux/amd64")
	})
	t.Run("legacy docker save", func(t *testing.T) {
		l := imagetest.NewLayer(t, testtar.Build(t, testtar.File("x", "same")), imagetest.Gzip, false)
		img0 := imagetest.New(t, imagetest.Spec{Layers: []v1.Layer{l, l}})
		p := imagetest.WriteLegacyDockerSave(t, filepath.Join(t.TempDir(), "save.tar"), img0, "app:latest")
		img := resolveT(t, KindOCIArchive, p, Options{Platform: amd64})
		if len(img.Layers) != 2 || img.Layers[1].Compression != "none" || img.Layers[0].Digest != img.Layers[0].DiffID {
			t.Errorf("layers %+v", img.Layers)
		}
		if files := readFiles(t, img); files["x"] != "same" {
			t.Errorf("files %v", files)
		}
		flipMember(t, p, "0000000000000000000000000000000000000000000000000000000000000001/layer.tar")
		img = resolveT(t, KindOCIArchive, p, Options{Platform: amd64})
		_, err := tryReadFiles(context.Background(), img)
		testenv.WantErr(t, err, "layer 1/2 "+img.Layers[0].Digest.String(), "digest mismatch")
	})
}

func TestTamperedLayoutAndArchives(t *testing.T) {
	require.Integration(t, "writes and tampers with layouts and archives")
	img0 := imagetest.New(t, imagetest.Spec{OCI: true})
	l1 := layerDigest(t, img0, 1)
	mdig, _ := img0.Digest()
	fresh := func(t *testing.T) string {
		return imagetest.WriteLayout(t, t.TempDir(), imagetest.LayoutEntry{Image: img0})
	}
	t.Run("layout layer", func(t *testing.T) {
		dir := fresh(t)
		flip(t, filepath.Join(dir, "blobs", "sha256", l1.Hex), 20)
		img := resolveT(t, KindOCILayout, dir, Options{Platform: amd64})
		_, err := tryReadFiles(context.Background(), img)
		testenv.WantErr(t, err, "layer 2/2 "+l1.String(), "digest mismatch", "tampered")
	})
	t.Run("layout manifest", func(t *testing.T) {
		dir := fresh(t)
		flip(t, filepath.Join(dir, "blobs", "sha256", mdig.Hex), 30)
		_, err := Resolve(context.Background(), Source{Kind: KindOCILayout, Ref: dir}, Options{Platform: amd64, NoCache: true})
		testenv.WantErr(t, err, "manifest "+mdig.String(), "digest mismatch")
	})
	t.Run("layout config", func(t *testing.T) {
		dir := fresh(t)
		cd, _ := img0.ConfigName()
		flip(t, filepath.Join(dir, "blobs", "sha256", cd.Hex), 10)
		_, err := Resolve(context.Background(), Source{Kind: KindOCILayout, Ref: dir}, Options{Platform: amd64, NoCache: true})
		testenv.WantErr(t, err, "config "+cd.String(), "digest mismatch")
	})
	t.Run("oci archive member", func(t *testing.T) {
		archive := imagetest.WriteOCIArchive(t, fresh(t), filepath.Join(t.TempDir(), "a.tar"), false)
		flipMember(t, archive, "blobs/sha256/"+l1.Hex)
		img := resolveT(t, KindOCIArchive, archive, Options{Platform: amd64})
		_, err := tryReadFiles(context.Background(), img)
		testenv.WantErr(t, err, "layer 2/2 "+l1.String(), "digest mismatch")
	})
	t.Run("oci archive manifest", func(t *testing.T) {
		archive := imagetest.WriteOCIArchive(t, fresh(t), filepath.Join(t.TempDir(), "a.tar"), false)
		flipMember(t, archive, "blobs/sha256/"+mdig.Hex)
		_, err := Resolve(context.Background(), Source{Kind: KindOCIArchive, Ref: archive}, Options{Platform: amd64, NoCache: true})
		testenv.WantErr(t, err, "manifest "+mdig.String(), "digest mismatch")
	})
	t.Run("gzip oci archive", func(t *testing.T) {
		dir := fresh(t)
		flip(t, filepath.Join(dir, "blobs", "sha256", l1.Hex), -3) // in the gzip trailer
		archive := imagetest.WriteOCIArchive(t, dir, filepath.Join(t.TempDir(), "a.tar.gz"), true)
		img := resolveT(t, KindOCIArchive, archive, Options{Platform: amd64})
		_, err := tryReadFiles(context.Background(), img)
		testenv.WantErr(t, err, "layer 2/2 "+l1.String(), "digest mismatch")
	})
	t.Run("docker save layer", func(t *testing.T) {
		p := imagetest.WriteDockerSave(t, filepath.Join(t.TempDir(), "s.tar"), map[string]v1.Image{"a:1": img0})
		flipMember(t, p, l1.Hex+".tar.gz")
		img := resolveT(t, KindOCIArchive, p, Options{Platform: amd64})
		_, err := tryReadFiles(context.Background(), img)
		testenv.WantErr(t, err, "layer 2/2", "digest mismatch")
	})
	t.Run("docker save config", func(t *testing.T) {
		p := imagetest.WriteDockerSave(t, filepath.Join(t.TempDir(), "s.tar"), map[string]v1.Image{"a:1": img0})
		cd, _ := img0.ConfigName()
		flipMember(t, p, cd.String())
		_, err := Resolve(context.Background(), Source{Kind: KindOCIArchive, Ref: p}, Options{Platform: amd64, NoCache: true})
		testenv.WantErr(t, err, "config "+cd.String(), "digest mismatch")
	})
}

func TestArchiveErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o644)
		return p
	}
	for _, tc := range []struct {
		name, path string
		parts      []string
	}{
		{"missing", filepath.Join(dir, "nope.tar"), []string{"cannot open archive"}},
		{"not a tar", write("junk.tar", strings.Repeat("junk", 300)), []string{"is not a valid image archive"}},
		{"empty", write("empty.tar", ""), []string{"neither index.json"}},
		{"directory", dir, []string{"is a directory"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Resolve(context.Background(), Source{Kind: KindOCIArchive, Ref: tc.path}, Options{Platform: amd64, NoCache: true})
			testenv.WantErr(t, err, tc.parts...)
			if strings.Join(hint.Of(err), "\n") == "" {
				t.Errorf("no hints: %v", err)
			}
		})
	}
}

// TestWithoutCredentials: user information before the registry is found
// and hidden; a digest's "@" is not user information.
func TestWithoutCredentials(t *testing.T) {
	for _, tc := range []struct {
		ref, shown string
		refused    bool
	}{
		{"alice:s3cretpw@registry.example.com/app:1", "***@registry.example.com/app:1", true},
		{"https://alice:s3cretpw@registry.example.com/app", "https://***@registry.example.com/app", true},
		{"alice@registry.example.com/app", "***@registry.example.com/app", true},
		{"alice:s3cretpw@busybox", "***@busybox", true},
		{"busybox@sha256:" + strings.Repeat("a", 64), "", false},
		{"registry.example.com:5000/team/app@sha256:" + strings.Repeat("b", 64), "", false},
		{"127.0.0.1:5000/app:latest", "", false},
	} {
		shown, refused := WithoutCredentials(tc.ref)
		if refused != tc.refused || (refused && shown != tc.shown) {
			t.Errorf("WithoutCredentials(%q) = %q, %v; want %q, %v", tc.ref, shown, refused, tc.shown, tc.refused)
		}
		if err := checkRegistryRef(tc.ref); (err != nil) != tc.refused {
			t.Errorf("checkRegistryRef(%q) = %v", tc.ref, err)
		}
	}
}

// TestKinds: the table names every kind once, with a flag and a resolver,
// and what the commands and results read from it.
func TestKinds(t *testing.T) {
	flags := map[string]bool{}
	for _, k := range Kinds() {
		info, ok := k.Kind.Info()
		if !ok || info.Flag != k.Flag || k.resolve == nil || k.Flag == "" || k.Noun == "" || flags[k.Flag] {
			t.Errorf("kind %q: %+v", k.Kind, k)
		}
		flags[k.Flag] = true
	}
	if got := kindFlags("or"); got != "--image, --oci-layout or --oci-tar" {
		t.Errorf("kindFlags = %q", got)
	}
	if _, ok := SourceKind("ftp").Info(); ok {
		t.Error("an unknown kind has info")
	}
	if _, err := Resolve(context.Background(), Source{Kind: "ftp", Ref: "x"}, Options{}); err == nil || !strings.Contains(err.Error(), `unknown source kind "ftp"`) || !strings.Contains(strings.Join(hint.Of(err), " "), "--image, --oci-layout or --oci-tar") {
		t.Errorf("an unknown kind: %v %v", err, hint.Of(err))
	}
}
