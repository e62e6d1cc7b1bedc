package app

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/docker2vm/docker2vm/convert"
	"github.com/docker2vm/docker2vm/gondolin"
	"github.com/docker2vm/docker2vm/internal/testenv"
	"github.com/docker2vm/docker2vm/internal/testenv/gondolintest"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
)

// TestBootPublishedRegistry: guests published with --publish into a
// directory, served over HTTP, are pulled and booted by the real Gondolin
// host by NAME:TAG alone (GONDOLIN_IMAGE_REGISTRY_URL, an empty image
// store), on both architectures; and docker2vm's own base discovery
// downloads a base from a registry it published itself.
func TestBootPublishedRegistry(t *testing.T) {
	reg, _ := bootPrereqs(t, testenv.AMD64)
	imgs, bases := busyboxImages(t)
	pub := t.TempDir()
	srv := httptest.NewServer(http.FileServer(http.Dir(pub)))
	defer srv.Close()
	docURL := srv.URL + "/" + gondolin.RegistryDocument
	idx := imagetest.NewIndex(t, imagetest.IndexSpec{OCI: true, Images: []v1.Image{imgs[testenv.AMD64], imgs[testenv.ARM64]}})
	ref := reg.Push(t, "pub:multi", nil, idx)
	t.Setenv("GONDOLIN_IMAGE_STORE", t.TempDir()) // --tag imports go here, not into the store Gondolin pulls into

	// Both platforms as pub:both, then the arm64 one alone as pub:arm
	// (Gondolin pulls the host's arch of a ref that has several).
	out := filepath.Join(t.TempDir(), "guests")
	var multi convert.MultiResult
	runJSON(t, &multi, "--image", ref, "--platform", "linux/amd64,linux/arm64", "--mode", "assets", "--out", out,
		"--base", bases[testenv.AMD64], "--base", bases[testenv.ARM64], "--tag", "pub:both", "--publish", pub, "--no-cache", "--quiet")
	for _, r := range multi.Platforms {
		if r.Published == nil || r.Published.Ref != "pub:both" || !strings.HasPrefix(r.Published.URL, "builds/") {
			t.Fatalf("%s: published = %+v", r.Platform, r.Published)
		}
	}
	var arm convert.Result
	runJSON(t, &arm, "--image", ref, "--platform", "linux/arm64", "--mode", "assets", "--out", filepath.Join(t.TempDir(), "arm"),
		"--base", bases[testenv.ARM64], "--tag", "pub:arm", "--publish", pub, "--no-cache", "--quiet")
	if arm.Published == nil || !arm.Published.Reused {
		t.Errorf("the same arm64 guest again: published = %+v, want the archive reused", arm.Published)
	}
	var doc struct {
		Refs   map[string]map[string]string `json:"refs"`
		Builds map[string]json.RawMessage   `json:"builds"`
	}
	raw, _ := os.ReadFile(filepath.Join(pub, gondolin.RegistryDocument))
	if err := json.Unmarshal(raw, &doc); err != nil || len(doc.Refs["pub:both"]) != 2 || len(doc.Refs["pub:arm"]) != 1 || len(doc.Builds) != 2 {
		t.Fatalf("registry document: %v\n%s", err, raw)
	}

	for _, tc := range []struct{ ref, arch string }{{"pub:both", testenv.AMD64}, {"pub:arm", testenv.ARM64}} {
		t.Run(tc.arch, func(t *testing.T) {
			store := t.TempDir()
			res := gondolintest.Boot(t, tc.ref, gondolintest.BootOptions{Arch: tc.arch,
				HostEnv: []string{"GONDOLIN_IMAGE_STORE=" + store, "GONDOLIN_IMAGE_REGISTRY_URL=" + docURL}},
				[]string{"uname", "-m"},
				[]string{"/usr/bin/docker2vm-entrypoint", "from", "the", "registry"},
			)
			expectOutput(t, res, 0, unameM[tc.arch]+"\n")
			expectOutput(t, res, 1, "app says hello busybox from /srv as 0 with from the registry")
		})
	}

	// A base from our own registry: publish a converted guest as
	// Gondolin's default base ref, and convert with nothing but the
	// registry URL and an empty store.
	baseReg := t.TempDir()
	bsrv := httptest.NewServer(http.FileServer(http.Dir(baseReg)))
	defer bsrv.Close()
	runJSON(t, &arm, "--image", ref, "--platform", "linux/arm64", "--mode", "assets", "--out", filepath.Join(t.TempDir(), "b"),
		"--base", bases[testenv.ARM64], "--tag", "alpine-base:latest", "--publish", baseReg, "--no-cache", "--quiet")
	t.Setenv("GONDOLIN_IMAGE_STORE", t.TempDir())
	t.Setenv("GONDOLIN_IMAGE_REGISTRY_URL", bsrv.URL+"/"+gondolin.RegistryDocument)
	t.Setenv("GONDOLIN_GUEST_DIR", "")
	t.Setenv("GONDOLIN_DEFAULT_IMAGE", "")
	guest := convertSource(t, testenv.ARM64, "", "--image", ref)
	if inj := readMeta(t, guest).RuntimeInjection; inj.Base == nil || inj.Base.BuildID != arm.Published.BuildID || !strings.Contains(inj.BaseOrigin, "download") {
		t.Errorf("base: %+v from %q; want build %s downloaded from our registry", inj.Base, inj.BaseOrigin, arm.Published.BuildID)
	}
}

// runJSON runs oci2gondolin and decodes its JSON result into v.
func runJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	code, stdout, stderr := run(t, OCI2Gondolin(), args...)
	if code != 0 {
		t.Fatalf("oci2gondolin %s: exit %d\n%s", strings.Join(args, " "), code, stderr)
	}
	if err := json.Unmarshal([]byte(stdout), v); err != nil {
		t.Fatalf("stdout is not one JSON document: %v\n%s", err, stdout)
	}
}
