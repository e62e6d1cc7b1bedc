package convert

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/docker2vm/docker2vm/image"
	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/testenv"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
	"github.com/docker2vm/docker2vm/internal/testenv/registrytest"
	"github.com/docker2vm/docker2vm/internal/testtar"
)

var (
	amd64 = v1.Platform{OS: "linux", Architecture: "amd64"}
	arm64 = v1.Platform{OS: "linux", Architecture: "arm64"}
)

// indexSource is a layout whose one entry is an index of an image per
// platform (each image's /etc/arch names its platform).
func indexSource(t *testing.T, plats ...v1.Platform) image.Source {
	var imgs []v1.Image
	for _, p := range plats {
		imgs = append(imgs, imagetest.New(t, imagetest.Spec{OCI: true, Platform: p}))
	}
	idx := imagetest.NewIndex(t, imagetest.IndexSpec{OCI: true, Images: imgs, Attestation: true})
	dir := imagetest.WriteLayout(t, filepath.Join(t.TempDir(), "layout"), imagetest.LayoutEntry{Index: idx})
	return image.Source{Kind: image.KindOCILayout, Ref: dir}
}

func TestRunPlatforms(t *testing.T) {
	ctx := context.Background()
	out := filepath.Join(t.TempDir(), "out")
	src := indexSource(t, amd64, arm64)
	res, err := RunPlatforms(ctx, options(src, out), []image.Platform{arm64, amd64})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Platforms) != 2 || res.OutDir != out {
		t.Fatalf("result: %+v", res)
	}
	for i, want := range []struct{ plat, dir, arch string }{
		{"linux/arm64", "linux_arm64", "arm64"},
		{"linux/amd64", "linux_amd64", "amd64"},
	} {
		r := res.Platforms[i]
		dir := filepath.Join(out, want.dir)
		if r.Platform != want.plat || r.OutDir != dir || r.RootfsPath != filepath.Join(dir, RootfsFile) {
			t.Errorf("platform %d: %+v", i, r)
		}
		meta := readMeta(t, dir)
		if meta.Platform != want.plat {
			t.Errorf("%s/meta.json platform = %q", want.dir, meta.Platform)
		}
		r2, err := testenv.OpenExt4(t, filepath.Join(dir, RootfsFile)).Open("/etc/arch")
		if err != nil {
			t.Fatal(err)
		}
		if b, err := io.ReadAll(r2); err != nil || strings.TrimSpace(string(b)) != want.arch {
			t.Errorf("%s: /etc/arch = %q, %v", want.dir, b, err)
		}
	}
	ents, _ := os.ReadDir(out)
	if len(ents) != 2 {
		t.Errorf("output holds %d entries, want the two platform directories", len(ents))
	}
	assertNoStaging(t, filepath.Dir(out))

	// Again into the same output: replaced whole. Then one platform into
	// it: a multi-platform output is a docker2vm output too.
	if _, err := RunPlatforms(ctx, options(src, out), []image.Platform{amd64, arm64}); err != nil {
		t.Fatalf("converting again: %v", err)
	}
	stale := filepath.Join(out, "linux_amd64", "stale")
	os.WriteFile(stale, []byte("x"), 0o644)
	if _, err := RunPlatforms(ctx, options(src, out), []image.Platform{amd64, arm64}); err == nil || !strings.Contains(err.Error(), "linux_amd64/stale") {
		t.Fatalf("a user file in a platform's directory: %v", err)
	}
	os.Remove(stale)
	if _, err := Run(ctx, options(src, out)); err != nil {
		t.Fatalf("one platform into a multi-platform output: %v", err)
	}
	if _, err := os.Stat(filepath.Join(out, RootfsFile)); err != nil {
		t.Error(err)
	}
}

// TestRunPlatformsBadInput: nothing is published when a platform is
// missing from the image or given twice, and an earlier output stays.
func TestRunPlatformsBadInput(t *testing.T) {
	ctx := context.Background()
	out := filepath.Join(t.TempDir(), "out")
	amdOnly := indexSource(t, amd64)
	if _, err := Run(ctx, options(amdOnly, out)); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(out, RootfsFile))
	for _, tc := range []struct {
		name  string
		plats []image.Platform
		want  []string
	}{
		{"missing", []image.Platform{amd64, arm64}, []string{"linux/arm64", "linux/amd64"}},
		{"twice", []image.Platform{arm64, {OS: "linux", Architecture: "arm64", Variant: "v8"}}, []string{"given twice"}},
		{"none", nil, []string{"no platform"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := RunPlatforms(ctx, options(amdOnly, out), tc.plats)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
			after, _ := os.ReadFile(filepath.Join(out, RootfsFile))
			if string(after) != string(before) {
				t.Error("the earlier output changed")
			}
			assertNoStaging(t, filepath.Dir(out))
		})
	}
}

func TestPlanPlatforms(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	plan, err := PlanPlatforms(context.Background(), options(indexSource(t, amd64, arm64), out), []image.Platform{amd64, arm64})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Platforms) != 2 || plan.Platforms[1].Platform != "linux/arm64" || plan.Platforms[1].OutDir != out+"/linux_arm64" {
		t.Errorf("plan: %+v", plan)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a dry run wrote %s", out)
	}
}

func TestPlatformDir(t *testing.T) {
	for _, tc := range []struct {
		arch, variant, want string
	}{
		{"amd64", "", "linux_amd64"},
		{"arm64", "", "linux_arm64"},
		{"arm64", "v8", "linux_arm64"},
		{"arm", "v7", "linux_arm_v7"},
		{"arm64", "v9", "linux_arm64_v9"},
	} {
		p := image.Platform{OS: "linux", Architecture: tc.arch, Variant: tc.variant}
		if got := PlatformDir(p); got != tc.want {
			t.Errorf("PlatformDir(%+v) = %q, want %q", p, got, tc.want)
		}
	}
}

// TestRunPlatformsProgressLines: every progress line about one platform,
// the image's own (downloads, cached blobs) included, names it. (The
// platforms share their first layer: with --plain the second starts from
// the state the first stored after it, the prefix cache.)
func TestRunPlatformsProgressLines(t *testing.T) {
	require.Integration(t, "starts a registry")
	reg := registrytest.Start(t, registrytest.Options{})
	shared := imagetest.NewLayer(t, testtar.Build(t, testtar.File("shared", "both\n")), imagetest.Gzip, true)
	var imgs []v1.Image
	for _, p := range []v1.Platform{amd64, arm64} {
		own := imagetest.NewLayer(t, testtar.Build(t, testtar.File("arch", p.Architecture+"\n")), imagetest.Gzip, true)
		imgs = append(imgs, imagetest.New(t, imagetest.Spec{OCI: true, Platform: p, Layers: []v1.Layer{shared, own}}))
	}
	ref := reg.Push(t, "multi:1", nil, imagetest.NewIndex(t, imagetest.IndexSpec{OCI: true, Images: imgs}))
	var progress bytes.Buffer
	o := options(image.Source{Kind: image.KindRegistry, Ref: ref}, filepath.Join(t.TempDir(), "out"))
	o.Image.NoCache, o.Image.CacheDir = false, t.TempDir()
	o.Progress, o.Image.Progress = &progress, &progress
	if _, err := RunPlatforms(context.Background(), o, []image.Platform{amd64, arm64}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\n[linux/amd64] Downloading layer 1/2 ", "\n[linux/amd64] applied layer 2/2 ",
		"\n[linux/arm64] reused the merged state after layer 1/2 ", "\n[linux/arm64] Downloading layer 2/2 "} {
		if !strings.Contains("\n"+progress.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want[1:], progress.String())
		}
	}
	for _, l := range strings.Split(strings.TrimSpace(progress.String()), "\n") {
		if strings.Contains(l, "layer ") && !strings.HasPrefix(l, "[linux/") {
			t.Errorf("a line about a platform's layer does not name the platform: %q", l)
		}
	}
}
