package app

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/testenv"
	"github.com/docker2vm/docker2vm/internal/testenv/gondolintest"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
	"github.com/docker2vm/docker2vm/internal/testenv/qemuuser"
)

// TestOutputSameOnEveryBuild converts one image with three builds of
// oci2gondolin: this host's, one with the portable file I/O forced
// (-tags docker2vm_portable: no SEEK_DATA, no writeback hints, no
// uncached writes, as on a host without Linux's or macOS's calls), and a
// linux/arm64 build run under qemu-user. Every byte of the outputs must be
// the same: what a guest gets does not depend on where it was converted.
func TestOutputSameOnEveryBuild(t *testing.T) {
	require.Integration(t, "builds the command three times")
	qemu := qemuuser.Path(t, testenv.ARM64)
	goTool := require.Tool(t, "go")
	base := gondolintest.BaseBundle(t)
	bins := t.TempDir()
	build := func(name string, env []string, args ...string) string {
		out := filepath.Join(bins, name)
		cmd := exec.Command(goTool, append(append([]string{"build", "-o", out}, args...), "../../cmd/oci2gondolin")...)
		cmd.Env = append(append(os.Environ(), "CGO_ENABLED=0"), env...)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", name, err, b)
		}
		return out
	}
	builds := []struct {
		name string
		argv []string
	}{
		{"native", []string{build("native", nil)}},
		{"portable", []string{build("portable", nil, "-tags", "docker2vm_portable")}},
		{"linux-arm64", []string{qemu, build("arm64", []string{"GOOS=linux", "GOARCH=arm64"})}},
	}

	img := imagetest.WithConfig(t, imagetest.Busybox(t, gondolintest.BaseBusybox(t, base)), func(c *v1.Config) { c.User = "1000:1000" })
	layout := imagetest.WriteLayout(t, filepath.Join(t.TempDir(), "layout"), imagetest.LayoutEntry{Image: img})
	var want map[string]string
	for _, b := range builds {
		out := filepath.Join(t.TempDir(), b.name)
		cmd := exec.Command(b.argv[0], append(b.argv[1:], "--oci-layout", layout, "--platform", "linux/amd64", "--mode", "assets",
			"--base", base, "--out", out, "--no-cache", "--quiet")...)
		cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=1700000000")
		if o, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", b.name, err, o)
		}
		got := map[string]string{}
		for _, f := range []string{"rootfs.ext4", "manifest.json", "meta.json", "vmlinuz-virt", "initramfs.cpio.lz4"} {
			got[f] = sha256File(t, filepath.Join(out, f))
		}
		if want == nil {
			want = got
			t.Logf("%s: rootfs.ext4 %s", b.name, got["rootfs.ext4"])
			continue
		}
		for f, sum := range want {
			if got[f] != sum {
				t.Errorf("%s: %s differs from the native build's (%s, want %s)", b.name, f, got[f][:12], sum[:12])
			}
		}
	}
}

func sha256File(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestVersionStamped: the version given at link time is what --version
// prints, also where Go records no VCS revision (-buildvcs=false).
func TestVersionStamped(t *testing.T) {
	require.Integration(t, "builds the command")
	bin := filepath.Join(t.TempDir(), "oci2gondolin")
	cmd := exec.Command(require.Tool(t, "go"), "build", "-buildvcs=false", "-ldflags", "-X github.com/docker2vm/docker2vm/internal/cli.stamped=v9.8.7-test",
		"-o", bin, "../../cmd/oci2gondolin")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil || string(out) != "oci2gondolin v9.8.7-test\n" {
		t.Errorf("--version: %q, %v", out, err)
	}
}
