package image

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/docker2vm/docker2vm/hint"
)

func TestParsePlatforms(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr string
	}{
		{"linux/amd64", []string{"linux/amd64"}, ""},
		{"linux/amd64,linux/arm64", []string{"linux/amd64", "linux/arm64"}, ""},
		{"arm64, amd64", []string{"linux/arm64", "linux/amd64"}, ""},
		{"linux/arm64,arm64", nil, "given twice"},
		{"arm64,linux/arm64/v8", nil, "given twice"},
		{"amd64,x86_64", nil, "given twice"},
		{"linux/amd64,linux/riscv64", nil, `architecture "riscv64" is not supported`},
		{"linux/amd64,", nil, "expected OS/ARCH"},
		{",", nil, "expected OS/ARCH"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParsePlatforms(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParsePlatforms(%q) = %v, %v; want error containing %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var s []string
			for _, p := range got {
				s = append(s, p.OS+"/"+p.Architecture)
			}
			if strings.Join(s, ",") != strings.Join(tc.want, ",") {
				t.Errorf("ParsePlatforms(%q) = %v, want %v", tc.in, s, tc.want)
			}
		})
	}
}

func TestParsePlatform(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr string
	}{
		{"linux/amd64", "linux/amd64", ""},
		{"linux/arm64", "linux/arm64", ""},
		{"amd64", "linux/amd64", ""},
		{"arm64", "linux/arm64", ""},
		{"linux/arm64/v8", "linux/arm64/v8", ""},
		{"LINUX/AMD64", "linux/amd64", ""},
		{"aarch64", "linux/arm64", ""},
		{"x86_64", "linux/amd64", ""},
		{"linux/amd64/v3", "linux/amd64/v3", ""},
		{"windows/amd64", "", `OS "windows" is not supported`},
		{"linux/arm/v7", "", `architecture "arm" is not supported`},
		{"riscv64", "", `architecture "riscv64" is not supported`},
		{"linux/arm64/v7", "", `variant "v7"`},
		{"", "", "expected OS/ARCH"},
		{"linux/amd64/v2/x", "", "expected OS/ARCH"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			p, err := ParsePlatform(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParsePlatform(%q) = %v, %v; want error containing %q", tc.in, p, err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), "linux/amd64, linux/arm64") {
					t.Errorf("error does not list the supported platforms: %v", err)
				}
				if len(hint.Of(err)) == 0 {
					t.Errorf("error has no hints: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := platformString(p); got != tc.want {
				t.Errorf("ParsePlatform(%q) = %s, want %s", tc.in, got, tc.want)
			}
		})
	}
}

func TestHostPlatform(t *testing.T) {
	p := HostPlatform()
	if p.OS != "linux" || p.Architecture == "" {
		t.Fatalf("HostPlatform() = %v", p)
	}
}

func TestPlatformScore(t *testing.T) {
	pl := func(s string) Platform {
		parts := strings.Split(s, "/")
		p := Platform{OS: parts[0], Architecture: parts[1]}
		if len(parts) > 2 {
			p.Variant = parts[2]
		}
		return p
	}
	tests := []struct {
		have, want string
		match      bool
	}{
		{"linux/arm64", "linux/arm64", true},
		{"linux/arm64/v8", "linux/arm64", true},
		{"linux/arm64", "linux/arm64/v8", true},
		{"linux/arm64/v8", "linux/arm64/v8", true},
		{"linux/amd64", "linux/arm64", false},
		{"linux/arm/v7", "linux/arm64", false},
		{"windows/amd64", "linux/amd64", false},
		{"linux/amd64/v3", "linux/amd64", true},
		{"linux/amd64", "linux/amd64/v3", false},
	}
	for _, tc := range tests {
		if got := platformScore(pl(tc.have), pl(tc.want)) > 0; got != tc.match {
			t.Errorf("platformScore(%s, %s) match = %v, want %v", tc.have, tc.want, got, tc.match)
		}
	}
	// Exact variant preferred over a variant when none is asked for.
	if platformScore(pl("linux/amd64"), pl("linux/amd64")) <= platformScore(pl("linux/amd64/v3"), pl("linux/amd64")) {
		t.Error("plain amd64 should beat amd64/v3 when no variant is asked for")
	}
}

func TestSplitPathRef(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "layout")
	colon := filepath.Join(dir, "odd:name")
	os.Mkdir(plain, 0o755)
	os.Mkdir(colon, 0o755)
	os.WriteFile(filepath.Join(plain, "index.json"), []byte("{}"), 0o644)
	os.WriteFile(filepath.Join(colon, "index.json"), []byte("{}"), 0o644)
	archive := filepath.Join(dir, "img.tar")
	os.WriteFile(archive, nil, 0o644)
	tests := []struct {
		in, path, ref string
	}{
		{plain, plain, ""},
		{plain + ":v1", plain, "v1"},
		{plain + ":latest", plain, "latest"},
		{colon, colon, ""},           // exists whole: a ':' in the name
		{colon + ":v2", colon, "v2"}, // split at the last ':'
		{filepath.Join(dir, "missing:v1"), filepath.Join(dir, "missing:v1"), ""},
		{plain + ":", plain + ":", ""},
		{archive + ":example.com/app:1.0", archive, "example.com/app:1.0"},
		{archive + ":v1", archive, "v1"},
	}
	for _, tc := range tests {
		p, r := SplitPathRef(tc.in)
		if p != tc.path || r != tc.ref {
			t.Errorf("SplitPathRef(%q) = %q, %q; want %q, %q", tc.in, p, r, tc.path, tc.ref)
		}
	}
}

func TestCompressionOf(t *testing.T) {
	tests := []struct {
		mt      types.MediaType
		want    string
		wantErr string
	}{
		{types.OCILayer, "gzip", ""},
		{types.DockerLayer, "gzip", ""},
		{types.OCILayerZStd, "zstd", ""},
		{types.OCIUncompressedLayer, "none", ""},
		{"application/vnd.docker.image.rootfs.diff.tar", "none", ""},
		{types.DockerForeignLayer, "", "foreign"},
		{types.OCIRestrictedLayer, "", "foreign"},
		{types.OCIUncompressedRestrictedLayer, "", "foreign"},
		{"application/vnd.cncf.helm.chart.content.v1.tar+gzip", "", "unsupported media type"},
		{"", "", "unsupported media type"},
	}
	for _, tc := range tests {
		got, err := compressionOf(tc.mt, "layer 1 sha256:abc")
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "layer 1 sha256:abc") {
				t.Errorf("compressionOf(%q) = %q, %v; want error with %q naming the layer", tc.mt, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("compressionOf(%q) = %q, %v; want %q", tc.mt, got, err, tc.want)
		}
	}
}

// TestPlatformErrors: an image of a platform docker2vm cannot convert is
// never met with a --platform hint that would then be refused; the
// platforms an index offers are listed.
func TestPlatformErrors(t *testing.T) {
	amd64 := Platform{OS: "linux", Architecture: "amd64"}
	arm64 := Platform{OS: "linux", Architecture: "arm64"}
	win := Platform{OS: "windows", Architecture: "amd64"}
	tests := []struct {
		name    string
		err     error
		want    string
		hint    string
		notHint string
	}{
		{"single windows image", platformMismatchError(win, amd64),
			"image is windows/amd64, which cannot be converted (docker2vm converts linux/amd64 and linux/arm64 images)", "Choose an image that is published for linux/amd64.", "--platform windows"},
		{"single arm64 image", platformMismatchError(arm64, amd64),
			"image is linux/arm64 but --platform is linux/amd64", "pass --platform linux/arm64", ""},
		{"windows-only index", platformMissError(amd64, []Platform{win, {OS: "windows", Architecture: "arm64"}}),
			"it offers windows/amd64, windows/arm64, and none of them can be converted", "Choose an image", "--platform"},
		{"index with arm64 only", platformMissError(amd64, []Platform{win, arm64}),
			"the image has no linux/amd64 variant; it offers: linux/arm64, windows/amd64", "Pass --platform linux/arm64", "--platform windows"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(tc.err.Error(), tc.want) {
				t.Errorf("%q, want %q", tc.err, tc.want)
			}
			hints := strings.Join(hint.Of(tc.err), "\n")
			if !strings.Contains(hints, tc.hint) || (tc.notHint != "" && strings.Contains(hints+tc.err.Error(), tc.notHint)) {
				t.Errorf("hints %q: want %q, not %q", hints, tc.hint, tc.notHint)
			}
		})
	}
}
