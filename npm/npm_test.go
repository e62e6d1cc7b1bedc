//go:build linux

package npm

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/testenv"
	"github.com/docker2vm/docker2vm/internal/testenv/buildkittest"
	"github.com/docker2vm/docker2vm/internal/testenv/gondolintest"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
	"github.com/docker2vm/docker2vm/internal/testenv/registrytest"
)

// TestPackagesAsInstalled packs the npm packages for this host (make npm),
// installs the tarballs into a fresh project offline, runs the launchers
// through npx and bunx, and runs the JavaScript API's tests (test/,
// node --test under the Node.js Gondolin declares): convert, build with
// buildctl, errors and their hints, an abort, ensureImage twice, and a
// boot of its result with the real Gondolin host through VM.create.
func TestPackagesAsInstalled(t *testing.T) {
	require.Integration(t, "packs the npm packages, runs buildkitd and boots a VM")
	tools := require.Tools(t, "nodejs npm", "node", "npm", "npx")
	harness := gondolintest.Harness(t)
	bunx := filepath.Join(harness, "node_modules", ".bin", "bunx")
	if _, err := os.Stat(bunx); err != nil {
		require.Missing(t, "bunx (the npm package bun, installed in testdata/gondolin-host by make deps)")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}

	// make npm, for this host only.
	pkgs := t.TempDir()
	start := time.Now()
	run(t, root, []string{"NPM_OUT=" + pkgs, "PLATFORMS=linux/" + runtime.GOARCH}, "sh", "scripts/npm.sh")
	t.Logf("make npm (linux/%s): %s", runtime.GOARCH, time.Since(start).Round(time.Millisecond))
	tarballs, _ := filepath.Glob(filepath.Join(pkgs, "*.tgz"))
	if len(tarballs) != 2 {
		t.Fatalf("make npm for one host packed %v, want the main package and the host's", tarballs)
	}

	// A fresh project, installing what a user downloads, offline.
	proj := t.TempDir()
	if err := os.WriteFile(filepath.Join(proj, "package.json"), []byte(`{"name":"app","private":true,"type":"module"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, proj, nil, tools["npm"], append([]string{"install", "--offline", "--no-audit", "--no-fund", "--loglevel=error"}, tarballs...)...)
	version := strings.TrimSpace(run(t, root, nil, "sh", "scripts/version.sh"))
	if out := run(t, proj, nil, tools["npx"], "--offline", "oci2gondolin", "--version"); out != "oci2gondolin "+version+"\n" {
		t.Errorf("npx oci2gondolin --version printed %q, want the binaries' stamp %s", out, version)
	}
	if out := run(t, proj, nil, bunx, "oci2gondolin", "--help"); !strings.Contains(out, "oci2gondolin converts an OCI or Docker image into a Gondolin guest.") {
		t.Errorf("bunx oci2gondolin --help printed:\n%s", out)
	}
	if out := run(t, proj, nil, bunx, "--bun", "dockerfile2gondolin", "--version"); out != "dockerfile2gondolin "+version+"\n" {
		t.Errorf("bunx --bun dockerfile2gondolin --version printed %q", out)
	}

	// Without the platform package (--omit=optional), and with a damaged
	// one: an error that names the package and what to run.
	bare := t.TempDir()
	if err := os.WriteFile(filepath.Join(bare, "package.json"), []byte(`{"name":"bare","private":true}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var mainTarball string
	for _, tb := range tarballs {
		if !strings.Contains(filepath.Base(tb), "-linux-") {
			mainTarball = tb
		}
	}
	run(t, bare, nil, tools["npm"], "install", "--offline", "--omit=optional", "--no-audit", "--no-fund", "--loglevel=error", mainTarball)
	pkg := "@docker2vm/linux-" + map[string]string{"amd64": "x64", "arm64": "arm64"}[runtime.GOARCH]
	missing := exec.Command(tools["npx"], "--offline", "oci2gondolin", "--version")
	missing.Dir = bare
	out, err := missing.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "Error: The package "+pkg+
		", docker2vm's binaries for this host, is not installed.\nHow to fix:\n  - Install docker2vm without leaving out optional dependencies") {
		t.Errorf("npx oci2gondolin without %s: %v\n%s", pkg, err, out)
	}

	// The API's tests, with Gondolin importable from the project as a user
	// installs it (linked from the harness, offline).
	link := filepath.Join(proj, "node_modules", "@earendil-works")
	if err := os.MkdirAll(link, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(harness, "node_modules", "@earendil-works", "gondolin"), filepath.Join(link, "gondolin")); err != nil {
		t.Fatal(err)
	}
	testFile := filepath.Join(proj, "api.test.mjs")
	b, err := os.ReadFile(filepath.Join("test", "api.test.mjs"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(testFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	reg := registrytest.Start(t, registrytest.Options{})
	base := gondolintest.BaseBundleArch(t, testenv.AMD64)
	bk := buildkittest.Start(t, buildkittest.Options{InsecureRegistries: []string{reg.Host}})
	bk.PutOnPath(t)
	image := reg.Push(t, "busybox:api", imagetest.Busybox(t, gondolintest.BaseBusybox(t, base)), nil)
	scratch := t.TempDir()
	tmp := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd, release := gondolintest.HostCommand(ctx, t, testenv.AMD64, gondolintest.HarnessNode(harness), "--test", "--test-reporter=spec", testFile)
	defer release()
	cmd.Dir = proj
	cmd.Env = append(cmd.Env, "D2V_IMAGE="+image, "D2V_FROM="+image, "D2V_BASE="+base, "D2V_BUILDKIT="+bk.Addr,
		"D2V_SCRATCH="+scratch, "D2V_BOOT=1", "TMPDIR="+tmp, "XDG_CACHE_HOME="+t.TempDir(), "GONDOLIN_IMAGE_STORE="+t.TempDir(),
		"GONDOLIN_GUEST_DIR=")
	start = time.Now()
	out, err = cmd.CombinedOutput()
	t.Logf("node --test api.test.mjs (%s):\n%s", time.Since(start).Round(time.Millisecond), out)
	if err != nil {
		t.Fatalf("the API's tests failed: %v", err)
	}

	// A damaged install: the binary gone from the platform package.
	if err := os.Remove(filepath.Join(proj, "node_modules", filepath.FromSlash(pkg), "bin", "dockerfile2gondolin")); err != nil {
		t.Fatal(err)
	}
	damaged := exec.Command(tools["npx"], "--offline", "dockerfile2gondolin", "--version")
	damaged.Dir = proj
	out, err = damaged.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "bin/dockerfile2gondolin is missing or not executable: the install of "+pkg+" is damaged.\nHow to fix:\n  - Reinstall it: npm install "+pkg+"@") {
		t.Errorf("npx dockerfile2gondolin with its binary gone: %v\n%s", err, out)
	}
}

// run runs name with args in dir (env added to this process's) and
// returns its stdout, failing the test on a non-zero exit.
func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}
