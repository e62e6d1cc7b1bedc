package app

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/docker2vm/docker2vm/convert"
	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
	"github.com/docker2vm/docker2vm/internal/testenv/registrytest"
)

// TestRegistryEndToEnd runs oci2gondolin as a user would against the real
// registry server: a multi-platform index behind basic auth, credentials
// from a Docker config file, dry run first, then the conversion for arm64.
func TestRegistryEndToEnd(t *testing.T) {
	require.Integration(t, "starts a registry")
	reg := registrytest.Start(t, registrytest.Options{Username: "ci", Password: "s3cret"})
	amd := imagetest.New(t, imagetest.Spec{OCI: true})
	arm := imagetest.New(t, imagetest.Spec{OCI: true, Platform: v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}})
	idx := imagetest.NewIndex(t, imagetest.IndexSpec{OCI: true, Images: []v1.Image{amd, arm}, Attestation: true})
	ref := reg.Push(t, "multi:1", nil, idx)

	cache := t.TempDir()
	out := filepath.Join(t.TempDir(), "out")
	base := []string{"--image", ref, "--platform", "linux/arm64", "--out", out, "--cache-dir", cache, "--quiet", "--plain"}

	// Without credentials the registry says 401 and the hint names docker login.
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	code, stdout, stderr := run(t, OCI2Gondolin(), append(base, "--dry-run")...)
	if code != 1 || stdout != "" || !strings.Contains(stderr, "How to fix:") || !strings.Contains(stderr, "docker login") {
		t.Fatalf("anonymous: code %d stdout %q stderr %q", code, stdout, stderr)
	}

	reg.DockerConfig(t)
	code, stdout, stderr = run(t, OCI2Gondolin(), append(base, "--dry-run")...)
	if code != 0 {
		t.Fatalf("dry run: code %d stderr %q", code, stderr)
	}
	var plan convert.Plan
	if err := json.Unmarshal([]byte(stdout), &plan); err != nil {
		t.Fatalf("dry-run stdout is not JSON: %v\n%s", err, stdout)
	}
	armDigest, _ := arm.Digest()
	if plan.Image.Digest != armDigest.String() || plan.Platform != "linux/arm64/v8" || len(plan.Image.Layers) != 2 {
		t.Errorf("plan picked %s %s, want %s linux/arm64/v8", plan.Image.Digest, plan.Platform, armDigest)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("dry run wrote %s", out)
	}

	code, stdout, stderr = run(t, OCI2Gondolin(), base...)
	if code != 0 {
		t.Fatalf("convert: code %d stderr %q", code, stderr)
	}
	var res convert.Result
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, stdout)
	}
	if res.SourceDigest != armDigest.String() || res.Source.Ref != ref || res.Source.Kind != "image" {
		t.Errorf("result = %+v", res)
	}
	for _, f := range []string{res.RootfsPath, res.MetadataPath} {
		if _, err := os.Stat(f); err != nil {
			t.Error(err)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(cache, "blobs", "sha256"))
	if len(ents) == 0 {
		t.Errorf("nothing was cached in %s", cache)
	}
}
