package apptest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker2vm/docker2vm/internal/lock"
	"github.com/docker2vm/docker2vm/internal/testenv"
	"github.com/docker2vm/docker2vm/internal/testenv/buildkittest"
	"github.com/docker2vm/docker2vm/internal/testenv/debian"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
	"github.com/docker2vm/docker2vm/internal/testenv/qemuuser"
	"github.com/docker2vm/docker2vm/internal/testenv/registrytest"
)

// buildFormat is part of every image's cache key: bump it when the way
// images are built changes in a way their inputs do not show.
const buildFormat = "apptest-v1"

// Builder builds the application images with a real BuildKit (buildctl
// and buildkitd) from the Debian image of internal/testenv/debian, once:
// the OCI archives are cached in testenv.CacheDir()/apps by the hash of
// everything that goes into them. The daemon and the registry serving the
// Debian base start on the first build and stop when the test that made
// the Builder ends.
type Builder struct {
	t    *testing.T
	mu   sync.Mutex
	reg  *registrytest.Server
	bk   *buildkittest.Daemon
	base map[string]string // arch -> the Debian image's ref in reg
}

// NewBuilder returns a Builder whose daemons live as long as t.
func NewBuilder(t *testing.T) *Builder { return &Builder{t: t, base: map[string]string{}} }

// moduleDir is this package's directory in the source tree.
func moduleDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}

// Image returns the OCI archive of app for arch, building it on a cache
// miss (minutes: Debian packages installed by BuildKit, under qemu-user
// for a foreign arch).
func (b *Builder) Image(t *testing.T, app App, arch string) string {
	t.Helper()
	base, _ := debian.ImageArch(t, arch, imagetest.Gzip)
	digest, err := base.Digest()
	if err != nil {
		t.Fatal(err)
	}
	key, err := inputsKey(app, arch, digest.String())
	if err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(testenv.CacheDir(), "apps")
	out := filepath.Join(cache, fmt.Sprintf("%s-%s-%s.oci.tar", app.Name, arch, key[:20]))
	if _, err := os.Stat(out); err == nil {
		return out
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := lock.Acquire(context.Background(), filepath.Join(cache, ".lock"), func() { t.Log("waiting for another test process building application images") })
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	if _, err := os.Stat(out); err == nil {
		return out
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if b.bk == nil {
		b.reg = registrytest.Start(b.t, registrytest.Options{})
		b.bk = buildkittest.Start(b.t, buildkittest.Options{InsecureRegistries: []string{b.reg.Host}})
	}
	if b.base[arch] == "" {
		b.base[arch] = b.reg.Push(t, "debian:bookworm-"+arch, base, nil)
	}
	if arch != runtime.GOARCH {
		qemuuser.EnsureBinfmt(t, arch) // RUN steps of a foreign arch
	}

	ctxDir := t.TempDir()
	if err := os.CopyFS(ctxDir, os.DirFS(filepath.Join(moduleDir(), "testdata", app.Name))); err != nil {
		t.Fatal(err)
	}
	buildProbe(t, arch, filepath.Join(ctxDir, "d2v-probe"))
	tmp := out + ".tmp"
	defer os.Remove(tmp)
	start := time.Now()
	args := []string{"--addr", b.bk.Addr, "build", "--progress", "plain",
		"--frontend", "dockerfile.v0", "--local", "context=" + ctxDir, "--local", "dockerfile=" + ctxDir,
		"--opt", "platform=linux/" + arch, "--opt", "build-arg:BASE=" + b.base[arch],
		"--output", "type=oci,dest=" + tmp + ",name=docker2vm-apptest/" + app.Name + ":latest"}
	cmd := exec.Command(b.bk.Buildctl, args...)
	outb, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("building the %s image for %s: buildctl %s: %v\n%s", app.Name, arch, strings.Join(args, " "), err, tail(string(outb), 6000))
	}
	if err := os.Rename(tmp, out); err != nil {
		t.Fatal(err)
	}
	t.Logf("built the %s image for %s in %s", app.Name, arch, time.Since(start).Round(time.Second))
	return out
}

// inputsKey hashes what an image is built from: its testdata directory,
// the probe's sources, the Debian base and the architecture.
func inputsKey(app App, arch, base string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n", buildFormat, arch, base)
	for _, dir := range []string{filepath.Join(moduleDir(), "testdata", app.Name), filepath.Join(moduleDir(), "probe")} {
		var files []string
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				files = append(files, p)
			}
			return err
		})
		if err != nil {
			return "", err
		}
		sort.Strings(files)
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				return "", err
			}
			rel, _ := filepath.Rel(dir, f)
			fmt.Fprintf(h, "%s %d\n", rel, len(data))
			h.Write(data)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// buildProbe builds d2v-probe for arch, statically, at dst.
func buildProbe(t *testing.T, arch, dst string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", dst, "./probe")
	cmd.Dir = moduleDir()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building d2v-probe for %s: %v\n%s", arch, err, out)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
