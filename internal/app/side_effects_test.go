package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/docker2vm/docker2vm/internal/testenv"
	"github.com/docker2vm/docker2vm/internal/testenv/gondolintest"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
)

// TestSideEffectsAllOrNothing: --tag and --publish change Gondolin's image
// store and registry only together, after everything else succeeded: a
// publish that fails leaves the store's ref where it was (and --out as it
// was), and a multi-platform run moves both architectures' refs.
func TestSideEffectsAllOrNothing(t *testing.T) {
	reg, base := bootPrereqs(t, testenv.AMD64)
	imgs, bases := busyboxImages(t)
	store := t.TempDir()
	t.Setenv("GONDOLIN_IMAGE_STORE", store)
	refLink := func(arch string) string {
		t.Helper()
		target, err := os.Readlink(filepath.Join(store, "refs", "app", "1", arch))
		if err != nil {
			t.Fatal(err)
		}
		return target
	}
	out := filepath.Join(t.TempDir(), "out")
	first := reg.Push(t, "app:first", imagetest.Busybox(t, gondolintest.BaseBusybox(t, base)), nil)
	convert := func(ref string, extra ...string) (int, string) {
		args := append([]string{"--image", ref, "--platform", "linux/amd64", "--mode", "assets", "--base", base, "--out", out,
			"--no-cache", "--quiet", "--tag", "app:1"}, extra...)
		code, _, stderr := run(t, OCI2Gondolin(), args...)
		return code, stderr
	}
	if code, stderr := convert(first); code != 0 {
		t.Fatalf("first conversion: exit %d\n%s", code, stderr)
	}
	before := refLink("x86_64")
	meta, _ := os.ReadFile(filepath.Join(out, "meta.json"))

	// Another image, published into a directory whose document is not
	// Gondolin's: the publish fails, and nothing moved.
	second := reg.Push(t, "app:second", imagetest.WithConfig(t, imagetest.Busybox(t, gondolintest.BaseBusybox(t, base)), func(c *v1.Config) { c.Cmd = []string{"other"} }), nil)
	pub := t.TempDir()
	os.WriteFile(filepath.Join(pub, "builtin-image-registry.json"), []byte(`{"not": "a registry"}`), 0o644)
	code, stderr := convert(second, "--publish", pub)
	if code == 0 || !strings.Contains(stderr, "is not a Gondolin image registry document") {
		t.Fatalf("publishing into a foreign document: exit %d\n%s", code, stderr)
	}
	if got := refLink("x86_64"); got != before {
		t.Errorf("the failed publish moved the store's ref: %s, was %s", got, before)
	}
	if after, _ := os.ReadFile(filepath.Join(out, "meta.json")); string(after) != string(meta) {
		t.Error("the failed publish changed --out")
	}

	// Both platforms: both refs move, and the registry names the same builds.
	idx := reg.Push(t, "app:multi", nil, imagetest.NewIndex(t, imagetest.IndexSpec{OCI: true, Images: []v1.Image{imgs[testenv.AMD64], imgs[testenv.ARM64]}}))
	pub = t.TempDir()
	multi := filepath.Join(t.TempDir(), "multi")
	code, _, stderr = run(t, OCI2Gondolin(), "--image", idx, "--platform", "linux/amd64,linux/arm64", "--mode", "assets",
		"--base", bases[testenv.AMD64], "--base", bases[testenv.ARM64], "--out", multi, "--no-cache", "--quiet", "--tag", "app:1", "--publish", pub)
	if code != 0 {
		t.Fatalf("multi-platform --tag --publish: exit %d\n%s", code, stderr)
	}
	doc, _ := os.ReadFile(filepath.Join(pub, "builtin-image-registry.json"))
	for _, arch := range []string{"x86_64", "aarch64"} {
		id := filepath.Base(refLink(arch))
		if !strings.Contains(string(doc), `"`+arch+`": "`+id+`"`) {
			t.Errorf("the store's %s ref names %s, the registry document does not:\n%s", arch, id, doc)
		}
	}
}

// TestSizeTooSmallNamesSize: a --size too small for Gondolin's runtime
// files is the flag's fault, not the base bundle's.
func TestSizeTooSmallNamesSize(t *testing.T) {
	reg, base := bootPrereqs(t, testenv.AMD64)
	ref := reg.Push(t, "app:small", imagetest.Busybox(t, gondolintest.BaseBusybox(t, base)), nil)
	for _, size := range []string{"64K", "1M", "12M"} { // too small for the glue, then for the image
		out := filepath.Join(t.TempDir(), "out")
		code, _, stderr := run(t, OCI2Gondolin(), "--image", ref, "--platform", "linux/amd64", "--base", base, "--out", out,
			"--no-cache", "--quiet", "--size", size)
		if code != 1 || !strings.Contains(stderr, "--size") || !strings.Contains(stderr, "Raise --size") || strings.Contains(stderr, "base") {
			t.Errorf("--size %s: exit %d\n%s", size, code, stderr)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("--size %s: %s was made", size, out)
		}
	}
}
