package app

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/docker2vm/docker2vm/convert"
	"github.com/docker2vm/docker2vm/gondolin"
	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/testenv"
	"github.com/docker2vm/docker2vm/internal/testenv/buildkittest"
	"github.com/docker2vm/docker2vm/internal/testenv/gondolintest"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
	"github.com/docker2vm/docker2vm/internal/testenv/qemuuser"
	"github.com/docker2vm/docker2vm/internal/testenv/registrytest"
)

// dockerfile2gondolin against a real BuildKit: buildkitd (built from the Go
// module graph by tools/buildkit) runs as root with the OCI worker, pulls
// its base image from the real registry server over plain HTTP, and the
// built image is converted in assets mode and booted under Gondolin. No
// Dockerfile here has a `# syntax=` line: that would need Docker Hub.

type buildkitEnv struct {
	reg  *registrytest.Server
	base string // the fixture Gondolin base bundle
	bk   *buildkittest.Daemon
	from string // REGISTRY/busybox:base
}

func buildkitPrereqs(t *testing.T, opts buildkittest.Options) *buildkitEnv {
	t.Helper()
	require.Integration(t, "runs buildkitd and boots a VM")
	reg, base := bootPrereqs(t, testenv.AMD64)
	opts.InsecureRegistries = append(opts.InsecureRegistries, reg.Host)
	bk := buildkittest.Start(t, opts)
	bk.PutOnPath(t)
	from := reg.Push(t, "busybox:base", imagetest.Busybox(t, gondolintest.BaseBusybox(t, base)), nil)
	// Each test's temporary files in a directory of its own, to check that
	// the build archive does not outlive the command.
	t.Setenv("TMPDIR", t.TempDir())
	return &buildkitEnv{reg: reg, base: base, bk: bk, from: from}
}

// writeBuildContext makes a build context directory holding files and a
// Dockerfile, and returns (dockerfile, context).
func writeBuildContext(t *testing.T, dockerfile string, files map[string]string) (string, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ctx")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	df := filepath.Join(dir, "Dockerfile")
	if err := os.WriteFile(df, []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	return df, dir
}

// build runs dockerfile2gondolin with the buildctl builder in assets mode,
// without caches, and checks the output contract: exit 0, stdout exactly one
// JSON document, no build archive left behind.
func (e *buildkitEnv) build(t *testing.T, addr, df, ctxDir string, extra ...string) (string, convert.Result, string) {
	t.Helper()
	return e.buildWith(t, []string{"--builder", "buildctl", "--buildkit-addr", addr}, df, ctxDir, append(extra, "--no-cache")...)
}

// buildWith is build with the builder flags given.
func (e *buildkitEnv) buildWith(t *testing.T, builder []string, df, ctxDir string, extra ...string) (string, convert.Result, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "guest")
	args := append(append([]string{"--file", df, "--context", ctxDir}, builder...),
		append([]string{"--platform", "linux/amd64", "--mode", "assets", "--base", e.base, "--out", out}, extra...)...)
	code, stdout, stderr := run(t, Dockerfile2Gondolin(), args...)
	if code != 0 {
		t.Fatalf("dockerfile2gondolin %s: exit %d\nstderr:\n%s\nbuildkitd log:\n%s", strings.Join(args, " "), code, stderr, tail(e.bk.Log(), 4000))
	}
	dec := json.NewDecoder(strings.NewReader(stdout))
	var res convert.Result
	if err := dec.Decode(&res); err != nil {
		t.Fatalf("stdout is not a JSON document: %v\n%s", err, stdout)
	}
	if _, err := dec.Token(); err != io.EOF {
		t.Fatalf("stdout holds more than one JSON document (build logs on stdout?):\n%s", stdout)
	}
	if res.Command != "dockerfile2gondolin" || res.Mode != convert.Mode("assets") || res.Platform != "linux/amd64" || res.OutDir != out ||
		!strings.HasPrefix(res.SourceDigest, "sha256:") || res.AssetManifestPath != filepath.Join(out, "manifest.json") {
		t.Errorf("result = %+v", res)
	}
	if want := (convert.SourceInfo{Kind: "dockerfile", Path: df, Context: ctxDir}); res.Source != want {
		t.Errorf("result source = %+v, want %+v", res.Source, want)
	}
	for _, f := range []string{"vmlinuz-virt", "initramfs.cpio.lz4", "rootfs.ext4", "manifest.json", "meta.json"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("output lacks %s: %v", f, err)
		}
	}
	// The build's archive is gone once the run ends: neither file names it.
	if m, err := gondolin.ReadManifest(filepath.Join(out, "manifest.json")); err != nil || m.OCISource == nil || m.OCISource.Image != df {
		t.Errorf("manifest.json ociSource %+v (%v), want the Dockerfile %s", m, err, df)
	}
	if meta := readMeta(t, out); meta.Source.Path != df {
		t.Errorf("meta.json source %+v, want the Dockerfile %s", meta.Source, df)
	}
	expectNoBuildTemp(t)
	return out, res, stderr
}

// expectNoBuildTemp checks that no docker2vm-build-* directory is left in
// os.TempDir() (a per-test TMPDIR).
func expectNoBuildTemp(t *testing.T) {
	t.Helper()
	left, _ := filepath.Glob(filepath.Join(os.TempDir(), "docker2vm-build-*"))
	if len(left) > 0 {
		t.Errorf("temporary build directories left behind: %v", left)
	}
}

func readMeta(t *testing.T, out string) convert.Metadata {
	t.Helper()
	var meta convert.Metadata
	b, err := os.ReadFile(filepath.Join(out, "meta.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &meta); err != nil {
		t.Fatal(err)
	}
	return meta
}

// rootfsFile reads one file of an output's rootfs.ext4 with our reader.
func rootfsFile(t *testing.T, out, name string) string {
	t.Helper()
	r, err := testenv.OpenExt4(t, filepath.Join(out, "rootfs.ext4")).Open(name)
	if err != nil {
		t.Fatalf("rootfs.ext4 %s: %v", name, err)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

const appDockerfile = `FROM %s
ARG GREETING_ARG=default-greeting
RUN echo built-by-run > /built && mkdir -p /work && echo "$GREETING_ARG" > /build-arg
COPY hello.txt /work/hello.txt
ENV APP_MODE=production
LABEL org.example.app=greeter
WORKDIR /work
USER 0
ENTRYPOINT ["/bin/sh","-c","echo mode=$APP_MODE in $(pwd); cat hello.txt"]
`

const helloTxt = "hello from the build context\n"

// TestBuildkitBootE2E builds a Dockerfile with RUN, COPY, ENV, WORKDIR, USER
// and ENTRYPOINT through the daemon's unix socket, then through its TCP
// address with a --build-arg, and boots both guests.
func TestBuildkitBootE2E(t *testing.T) {
	e := buildkitPrereqs(t, buildkittest.Options{TCP: true})
	df, ctxDir := writeBuildContext(t, fmt.Sprintf(appDockerfile, e.from), map[string]string{"hello.txt": helloTxt})

	out, _, stderr := e.build(t, e.bk.Addr, df, ctxDir, "--label", "org.example.build=e2e")
	// Without --quiet the build log goes to stderr, never stdout.
	if !strings.Contains(stderr, "buildctl --addr "+e.bk.Addr+" build") || !strings.Contains(stderr, "echo built-by-run") {
		t.Errorf("stderr lacks the build command and log:\n%s", stderr)
	}
	meta := readMeta(t, out)
	if meta.Labels["org.example.app"] != "greeter" || meta.Labels["org.example.build"] != "e2e" {
		t.Errorf("meta.json labels %v, want the Dockerfile's LABEL and --label's", meta.Labels)
	}
	rt := meta.Runtime
	if rt.WorkingDir != "/work" || rt.User != "0" || !contains(rt.Env, "APP_MODE=production") ||
		!reflect.DeepEqual(rt.Entrypoint, []string{"/bin/sh", "-c", "echo mode=$APP_MODE in $(pwd); cat hello.txt"}) {
		t.Errorf("meta.json runtime = %+v", rt)
	}
	gondolintest.Verify(t, out)
	res := gondolintest.Boot(t, out, gondolintest.BootOptions{},
		[]string{"cat", "/built"},
		[]string{"/bin/sh", "-c", "echo $APP_MODE"},
		[]string{"/usr/bin/docker2vm-entrypoint"},
		[]string{"cat", "/build-arg"},
		[]string{"id", "-u"},
	)
	expectOutput(t, res, 0, "built-by-run")
	expectOutput(t, res, 1, "production")
	expectOutput(t, res, 2, "mode=production in /work\n"+helloTxt)
	expectOutput(t, res, 3, "default-greeting")
	expectOutput(t, res, 4, "0")

	// The same build through a remote-style tcp:// address, with a build
	// argument, quietly.
	out2, _, stderr2 := e.build(t, e.bk.TCPAddr, df, ctxDir, "--build-arg", "GREETING_ARG=from the command line", "--quiet")
	if stderr2 != "" {
		t.Errorf("--quiet build wrote to stderr:\n%s", stderr2)
	}
	if got := rootfsFile(t, out2, "/built"); got != "built-by-run\n" {
		t.Errorf("tcp build: /built = %q", got)
	}
	res = gondolintest.Boot(t, out2, gondolintest.BootOptions{},
		[]string{"cat", "/build-arg"},
		[]string{"/usr/bin/docker2vm-entrypoint"},
	)
	expectOutput(t, res, 0, "from the command line")
	expectOutput(t, res, 1, "mode=production in /work\n"+helloTxt)
}

// TestBuildkitTargetE2E: --target picks a stage of a multi-stage
// Dockerfile, and without it the last stage is built.
func TestBuildkitTargetE2E(t *testing.T) {
	e := buildkitPrereqs(t, buildkittest.Options{})
	df, ctxDir := writeBuildContext(t, fmt.Sprintf(`FROM %s AS first
RUN echo first > /stage
CMD ["cat", "/stage"]

FROM first AS second
RUN echo second > /stage && echo second-only > /second
`, e.from), nil)
	out, _, _ := e.build(t, e.bk.Addr, df, ctxDir, "--target", "first", "--quiet")
	if got := rootfsFile(t, out, "/stage"); got != "first\n" {
		t.Errorf("--target first: /stage = %q", got)
	}
	if err := rootfsOpen(t, out, "/second"); err == nil {
		t.Errorf("--target first: /second exists")
	}
	out, _, _ = e.build(t, e.bk.Addr, df, ctxDir, "--quiet")
	if got := rootfsFile(t, out, "/stage"); got != "second\n" {
		t.Errorf("no --target: /stage = %q", got)
	}
	if got := rootfsFile(t, out, "/second"); got != "second-only\n" {
		t.Errorf("no --target: /second = %q", got)
	}
}

// rootfsOpen returns the error opening name in an output's rootfs.ext4 (nil
// when it exists).
func rootfsOpen(t *testing.T, out, name string) error {
	t.Helper()
	_, err := testenv.OpenExt4(t, filepath.Join(out, "rootfs.ext4")).Open(name)
	return err
}

// TestBuildkitFailingStepE2E: a failing RUN step is exit 1 with an error
// and hints on stderr, nothing on stdout, --out untouched (even with
// --force, which would replace it only after a successful conversion) and
// no archive left in the temporary directory.
func TestBuildkitFailingStepE2E(t *testing.T) {
	e := buildkitPrereqs(t, buildkittest.Options{})
	df, ctxDir := writeBuildContext(t, fmt.Sprintf("FROM %s\nRUN echo about-to-fail && exit 7\n", e.from), nil)
	out := filepath.Join(t.TempDir(), "guest")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "keep.txt"), []byte("earlier"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, quiet := range []bool{false, true} {
		args := []string{"--file", df, "--context", ctxDir, "--builder", "buildctl", "--buildkit-addr", e.bk.Addr,
			"--platform", "linux/amd64", "--mode", "assets", "--base", e.base, "--out", out, "--force"}
		if quiet {
			args = append(args, "--quiet")
		}
		code, stdout, stderr := run(t, Dockerfile2Gondolin(), args...)
		if quiet {
			t.Logf("quiet stderr:\n%s", stderr)
		}
		if code != 1 || stdout != "" {
			t.Errorf("quiet=%v: exit %d stdout %q; want 1 and nothing", quiet, code, stdout)
		}
		// The error names the step, its exit code and its last output, also
		// when the build log was not shown; the hint points at the line.
		for _, want := range []string{"Error: a RUN step failed with exit code 7: [2/2] RUN echo about-to-fail && exit 7\nits last output lines:\n  about-to-fail\n",
			"How to fix:\n  - Fix the step at " + df + ":2 "} {
			if !strings.Contains(stderr, want) {
				t.Errorf("quiet=%v: stderr lacks %q:\n%s", quiet, want, stderr)
			}
		}
		if !quiet && !strings.Contains(stderr, "did not complete successfully: exit code: 7") {
			t.Errorf("stderr lacks the build log:\n%s", stderr)
		}
		if quiet && strings.Count(stderr, "about-to-fail") != 2 {
			t.Errorf("quiet: stderr holds more than the error:\n%s", stderr)
		}
		expectNoBuildTemp(t)
		ents, _ := os.ReadDir(out)
		if len(ents) != 1 || ents[0].Name() != "keep.txt" {
			t.Errorf("quiet=%v: --out changed: %v", quiet, ents)
		}
	}
}

// TestBuildkitUnreachableE2E: an address with no daemon behind it is
// reported as such, with a hint, for unix and tcp addresses.
func TestBuildkitUnreachableE2E(t *testing.T) {
	require.Integration(t, "builds buildctl")
	offerBase(t) // the base is checked before the builder runs
	bin := buildkittest.Binaries(t)
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("TMPDIR", t.TempDir())
	df, ctxDir := writeBuildContext(t, "FROM scratch\n", nil)
	for _, addr := range []string{"unix://" + filepath.Join(t.TempDir(), "none.sock"), "tcp://127.0.0.1:1"} {
		out := filepath.Join(t.TempDir(), "guest")
		code, stdout, stderr := run(t, Dockerfile2Gondolin(), "--file", df, "--context", ctxDir, "--builder", "buildctl",
			"--buildkit-addr", addr, "--platform", "linux/amd64", "--mode", "rootfs", "--out", out)
		t.Logf("%s: stderr:\n%s", addr, stderr)
		if code != 1 || stdout != "" {
			t.Errorf("%s: exit %d stdout %q; want 1 and nothing", addr, code, stdout)
		}
		for _, want := range []string{"Error: cannot reach the BuildKit daemon", "How to fix:", "--buildkit-addr"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("%s: stderr lacks %q:\n%s", addr, want, stderr)
			}
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("%s: --out was created", addr)
		}
		expectNoBuildTemp(t)
	}
}

// TestBuildkitMultiPlatformE2E builds a Dockerfile for linux/amd64 and
// linux/arm64 in one BuildKit build (one OCI archive with an index) and
// converts each platform into its own directory. Its RUN step runs the
// arm64 busybox under qemu-user (binfmt_misc).
func TestBuildkitMultiPlatformE2E(t *testing.T) {
	e := buildkitPrereqs(t, buildkittest.Options{})
	qemuuser.EnsureBinfmt(t, testenv.ARM64)
	imgs, bases := busyboxImages(t)
	idx := imagetest.NewIndex(t, imagetest.IndexSpec{OCI: true, Images: []v1.Image{imgs[testenv.AMD64], imgs[testenv.ARM64]}})
	from := e.reg.Push(t, "busybox:multi", nil, idx)
	armBase := bases[testenv.ARM64]
	df, ctxDir := writeBuildContext(t, "FROM "+from+"\nCOPY hello.txt /hello.txt\nRUN uname -m > /built-on\nENV WHO=multi\n", map[string]string{"hello.txt": helloTxt})
	out := filepath.Join(t.TempDir(), "guests")
	args := []string{"--file", df, "--context", ctxDir, "--builder", "buildctl", "--buildkit-addr", e.bk.Addr,
		"--platform", "linux/amd64,linux/arm64", "--mode", "assets", "--base", e.base, "--base", armBase, "--out", out, "--no-cache", "--quiet"}
	code, stdout, stderr := run(t, Dockerfile2Gondolin(), args...)
	if code != 0 {
		t.Fatalf("dockerfile2gondolin %s: exit %d\n%s\nbuildkitd log:\n%s", strings.Join(args, " "), code, stderr, tail(e.bk.Log(), 4000))
	}
	var res convert.MultiResult
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || len(res.Platforms) != 2 {
		t.Fatalf("result: %v\n%s", err, stdout)
	}
	for _, arch := range testenv.Arches {
		dir := filepath.Join(out, "linux_"+arch)
		m := readMeta(t, dir)
		if m.Platform != "linux/"+arch || !contains(m.Runtime.Env, "WHO=multi") || m.Source.Kind != "dockerfile" {
			t.Errorf("%s/meta.json: platform %s env %v source %+v", dir, m.Platform, m.Runtime.Env, m.Source)
		}
		if got := rootfsFile(t, dir, "/hello.txt"); got != helloTxt {
			t.Errorf("%s: /hello.txt = %q", dir, got)
		}
		if got := rootfsFile(t, dir, "/built-on"); got != unameM[arch]+"\n" {
			t.Errorf("%s: the RUN step ran on %q", dir, got)
		}
	}
	expectNoBuildTemp(t)
}

// TestBuildxBootE2E builds through a real docker buildx (the plugin from
// Debian, scripts/install-deps.sh) with a builder of the remote driver
// pointed at the test's buildkitd, picked with --buildx-builder: no Docker
// engine is involved. The guest boots; building the same Dockerfile again
// takes its steps from BuildKit's cache (CACHED in the log), and the
// builder is kept.
func TestBuildxBootE2E(t *testing.T) {
	e := buildkitPrereqs(t, buildkittest.Options{})
	cfg := buildkittest.DockerBuildx(t)
	t.Setenv("DOCKER_CONFIG", cfg)
	e.bk.BuildxBuilder(t, cfg, "d2v-remote")
	df, ctxDir := writeBuildContext(t, fmt.Sprintf(appDockerfile, e.from)+"RUN echo buildx-step > /buildx-step\n", map[string]string{"hello.txt": helloTxt})
	t.Setenv("GREETING_ARG", "greeting from the environment")
	// docker2vm's own caches in the test's directory; BuildKit's is the
	// builder's.
	builder := []string{"--buildx-builder", "d2v-remote", "--cache-dir", t.TempDir()}

	out, _, stderr := e.buildWith(t, builder, df, ctxDir, "--build-arg", "GREETING_ARG", "--progress", "plain")
	if !strings.Contains(stderr, "+ docker buildx build --builder d2v-remote --file "+df) || !strings.Contains(stderr, "--build-arg GREETING_ARG ") ||
		!strings.Contains(stderr, "echo buildx-step") || strings.Contains(stderr, "creating the buildx builder") {
		t.Errorf("stderr lacks the build command and log, or a builder was created:\n%s", stderr)
	}
	for name, want := range map[string]string{"/built": "built-by-run\n", "/buildx-step": "buildx-step\n", "/build-arg": "greeting from the environment\n", "/work/hello.txt": helloTxt} {
		if got := rootfsFile(t, out, name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	gondolintest.Verify(t, out)
	res := gondolintest.Boot(t, out, gondolintest.BootOptions{},
		[]string{"cat", "/build-arg"},
		[]string{"/usr/bin/docker2vm-entrypoint"},
	)
	expectOutput(t, res, 0, "greeting from the environment")
	expectOutput(t, res, 1, "mode=production in /work\n"+helloTxt)

	// Again: every step comes from the builder's cache.
	out2, _, stderr2 := e.buildWith(t, builder, df, ctxDir, "--build-arg", "GREETING_ARG", "--progress", "plain")
	for _, step := range []string{"RUN echo built-by-run", "COPY hello.txt /work/hello.txt", "RUN echo buildx-step"} {
		if !cachedStep(stderr2, step) {
			t.Errorf("second build: %q is not CACHED:\n%s", step, stderr2)
		}
	}
	if got := rootfsFile(t, out2, "/buildx-step"); got != "buildx-step\n" {
		t.Errorf("second build: /buildx-step = %q", got)
	}
	// The builder is still there, and no other was made.
	for name, want := range map[string]bool{"d2v-remote": true, "docker2vm": false} {
		err := exec.Command("docker", "buildx", "inspect", name).Run()
		if (err == nil) != want {
			t.Errorf("docker buildx inspect %s: %v; want it to exist: %v", name, err, want)
		}
	}
}

// cachedStep reports whether a plain BuildKit log marks the step whose name
// holds part as CACHED ("#5 [2/4] RUN ..." then "#5 CACHED").
func cachedStep(log, part string) bool {
	ids := map[string]bool{}
	for _, l := range strings.Split(log, "\n") {
		id, rest, ok := strings.Cut(l, " ")
		if !ok || !strings.HasPrefix(id, "#") {
			continue
		}
		if strings.HasPrefix(rest, "[") && strings.Contains(rest, part) {
			ids[id] = true
		}
		if rest == "CACHED" && ids[id] {
			return true
		}
	}
	return false
}
