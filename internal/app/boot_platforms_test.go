package app

import (
	"crypto/sha256"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/docker2vm/docker2vm/convert"
	"github.com/docker2vm/docker2vm/internal/testenv"
	"github.com/docker2vm/docker2vm/internal/testenv/gondolintest"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
)

// Multi-platform sources and base discovery by the target architecture,
// each proven by booting the converted guest of every architecture.

// busyboxImages returns a busybox image per architecture (each from its
// fixture base) and the base bundles.
func busyboxImages(t *testing.T) (map[string]v1.Image, map[string]string) {
	t.Helper()
	imgs, bases := map[string]v1.Image{}, map[string]string{}
	for _, arch := range testenv.Arches {
		bases[arch] = gondolintest.BaseBundleArch(t, arch)
		imgs[arch] = imagetest.Busybox(t, gondolintest.BaseBusybox(t, bases[arch]))
	}
	return imgs, bases
}

// TestBootMultiPlatformIndex converts an amd64 + arm64 image index for each
// platform, in the two shapes multi-platform images come in: pushed to a
// registry (an index of image manifests, with a BuildKit attestation
// manifest), and as `docker buildx build --output type=oci` exports it (an
// OCI archive whose index.json names that index: an index in an index).
// Both must select the same image; the guest from the nested one boots.
func TestBootMultiPlatformIndex(t *testing.T) {
	reg, _ := bootPrereqs(t, testenv.AMD64)
	imgs, bases := busyboxImages(t)
	idx := imagetest.NewIndex(t, imagetest.IndexSpec{OCI: true, Attestation: true, Images: []v1.Image{imgs[testenv.AMD64], imgs[testenv.ARM64]}})
	ref := reg.Push(t, "multi:e2e", nil, idx)
	dir := t.TempDir()
	layout := imagetest.WriteLayout(t, filepath.Join(dir, "layout"), imagetest.LayoutEntry{Index: idx, RefName: "multi:e2e"})
	archive := imagetest.WriteOCIArchive(t, layout, filepath.Join(dir, "multi.tar"), false)
	idxDigest, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}

	forEachArch(t, func(t *testing.T, arch string) {
		want, err := imgs[arch].Digest()
		if err != nil {
			t.Fatal(err)
		}
		flat := convertAssets(t, arch, ref, bases[arch])
		nested := convertSource(t, arch, bases[arch], "--oci-tar", archive)
		for _, out := range []string{flat, nested} {
			if m := readMeta(t, out); m.SourceDigest != want.String() || m.IndexDigest != idxDigest.String() || m.Platform != "linux/"+arch {
				t.Errorf("%s: sourceDigest %s indexDigest %s platform %s; want %s, %s, linux/%s",
					out, m.SourceDigest, m.IndexDigest, m.Platform, want, idxDigest, arch)
			}
		}
		if a, b := fileSHA256(t, filepath.Join(flat, "rootfs.ext4")), fileSHA256(t, filepath.Join(nested, "rootfs.ext4")); a != b {
			t.Errorf("the registry index and the nested OCI archive gave different rootfs.ext4 (%x, %x)", a, b)
		}
		res := gondolintest.Boot(t, nested, gondolintest.BootOptions{},
			[]string{"uname", "-m"},
			[]string{"/usr/bin/docker2vm-entrypoint", "from", "an", "index"},
		)
		expectOutput(t, res, 0, unameM[arch]+"\n")
		expectOutput(t, res, 1, "app says hello busybox from /srv as 0 with from an index")
	})
}

func fileSHA256(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// TestBootBaseFromImageStore is how a Gondolin user converts: no --base,
// only an image store (GONDOLIN_IMAGE_STORE) holding Gondolin's default
// base ref alpine-base:latest for both architectures, imported with
// Gondolin's own CLI. oci2gondolin must take the base of the *target*
// architecture, --tag must import the guest into the same store, and
// Gondolin must boot it by that ref.
func TestBootBaseFromImageStore(t *testing.T) {
	reg, _ := bootPrereqs(t, testenv.AMD64)
	imgs, bases := busyboxImages(t)
	store := t.TempDir()
	for _, arch := range testenv.Arches {
		if out, err := gondolintest.CLI(t, []string{"GONDOLIN_IMAGE_STORE=" + store}, "image", "import", bases[arch], "--tag", "alpine-base:latest"); err != nil {
			t.Fatalf("gondolin image import %s: %v\n%s", arch, err, out)
		}
	}
	t.Setenv("GONDOLIN_IMAGE_STORE", store)
	t.Setenv("GONDOLIN_GUEST_DIR", "")
	t.Setenv("GONDOLIN_DEFAULT_IMAGE", "")

	forEachArch(t, func(t *testing.T, arch string) {
		ref := reg.Push(t, "busybox:"+arch, imgs[arch], nil)
		tag := "d2v-busybox:" + arch
		out := convertSource(t, arch, "", "--image", ref, "--no-download", "--tag", tag)

		var base struct {
			BuildID string `json:"buildId"`
		}
		raw, err := os.ReadFile(filepath.Join(bases[arch], "manifest.json"))
		if err != nil || json.Unmarshal(raw, &base) != nil {
			t.Fatalf("base manifest: %v", err)
		}
		inj := readMeta(t, out).RuntimeInjection
		if inj.Base == nil || inj.Base.BuildID != base.BuildID || inj.Base.Arch != unameM[arch] || !strings.Contains(inj.BaseOrigin, "alpine-base:latest") {
			t.Fatalf("meta.json runtimeInjection base %+v origin %q; want the %s fixture base %s from the image store", inj.Base, inj.BaseOrigin, arch, base.BuildID)
		}
		var m struct {
			BuildID string `json:"buildId"`
		}
		raw, _ = os.ReadFile(filepath.Join(out, "manifest.json"))
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		name, tg, _ := strings.Cut(tag, ":")
		if link, err := os.Readlink(filepath.Join(store, "refs", name, tg, unameM[arch])); err != nil || filepath.Base(link) != m.BuildID {
			t.Fatalf("ref symlink = %q, %v; want it to name object %s", link, err, m.BuildID)
		}
		res := gondolintest.Boot(t, tag, gondolintest.BootOptions{HostEnv: []string{"GONDOLIN_IMAGE_STORE=" + store}},
			[]string{"uname", "-m"},
			[]string{"/usr/bin/docker2vm-entrypoint", "from-store"},
		)
		expectOutput(t, res, 0, unameM[arch]+"\n")
		expectOutput(t, res, 1, "app says hello busybox from /srv as 0 with from-store")
	})
}

// TestBootMultiPlatformRun converts both platforms of an index in one run
// (--platform linux/amd64,linux/arm64, a --base per arch, --tag): one
// output directory per platform, one JSON result listing both, both
// imported under the one ref; each guest boots.
func TestBootMultiPlatformRun(t *testing.T) {
	reg, _ := bootPrereqs(t, testenv.AMD64)
	imgs, bases := busyboxImages(t)
	idx := imagetest.NewIndex(t, imagetest.IndexSpec{OCI: true, Images: []v1.Image{imgs[testenv.AMD64], imgs[testenv.ARM64]}})
	ref := reg.Push(t, "multi:run", nil, idx)
	store := t.TempDir()
	t.Setenv("GONDOLIN_IMAGE_STORE", store)
	out := filepath.Join(t.TempDir(), "guests")
	args := []string{"--image", ref, "--platform", "linux/arm64,linux/amd64", "--mode", "assets", "--out", out,
		"--base", bases[testenv.AMD64], "--base", bases[testenv.ARM64], "--tag", "multi:run", "--no-cache", "--quiet"}
	code, stdout, stderr := run(t, OCI2Gondolin(), args...)
	if code != 0 {
		t.Fatalf("oci2gondolin %s: exit %d\n%s", strings.Join(args, " "), code, stderr)
	}
	var res convert.MultiResult
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("stdout is not one JSON document: %v\n%s", err, stdout)
	}
	if len(res.Platforms) != 2 || res.OutDir != out {
		t.Fatalf("result: %s", stdout)
	}
	for i, arch := range []string{testenv.ARM64, testenv.AMD64} {
		r := res.Platforms[i]
		dir := filepath.Join(out, "linux_"+arch)
		if r.Platform != "linux/"+arch || r.OutDir != dir {
			t.Errorf("result %d: platform %s outDir %s", i, r.Platform, r.OutDir)
		}
		want, _ := imgs[arch].Digest()
		if m := readMeta(t, dir); m.SourceDigest != want.String() || m.Platform != "linux/"+arch {
			t.Errorf("%s/meta.json: %s %s", dir, m.SourceDigest, m.Platform)
		}
		gondolintest.Verify(t, dir)
		if _, err := os.Readlink(filepath.Join(store, "refs", "multi", "run", unameM[arch])); err != nil {
			t.Errorf("--tag: no %s ref: %v", unameM[arch], err)
		}
	}
	forEachArch(t, func(t *testing.T, arch string) {
		res := gondolintest.Boot(t, filepath.Join(out, "linux_"+arch), gondolintest.BootOptions{}, []string{"uname", "-m"})
		expectOutput(t, res, 0, unameM[arch]+"\n")
	})
}
