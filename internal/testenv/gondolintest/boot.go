package gondolintest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/testenv"
)

// BootOptions configures one Gondolin boot.
type BootOptions struct {
	// RootfsMode is Gondolin's rootfs.mode: "cow", "readonly", "memory",
	// or "" for the manifest's runtimeDefaults (else cow).
	RootfsMode string
	// Timeout bounds the whole run (boot, commands, shutdown). Default 4 min.
	Timeout time.Duration
	// StartTimeout is Gondolin's startTimeoutMs. Default 120 s.
	StartTimeout time.Duration
	// Memory is Gondolin's memory option (e.g. "512M"); "" keeps its default.
	Memory string
	// HostEnv adds "K=V" entries to the Node harness's environment, e.g.
	// GONDOLIN_IMAGE_STORE=DIR to boot an image ref from a private store.
	HostEnv []string
	// Append replaces the base of Gondolin's kernel command line
	// ("console=ttyS0 initramfs_async=1" on an x86_64 host, whatever the
	// guest's architecture); "" keeps Gondolin's. For example
	// "console=ttyAMA0 initramfs_async=1" shows an arm64 guest's console in
	// the log. DOCKER2VM_TEST_GONDOLIN_APPEND sets it for every boot.
	Append string
	// VFS boots with Gondolin's default filesystem (the guest's sandboxfs
	// serving /data), as Gondolin's users do; without it the harness passes
	// vfs: null.
	VFS bool
	// Mounts maps guest paths to host directories for Gondolin's mounts
	// option (RealFSProvider); they need VFS.
	Mounts map[string]string
	// Checkpoint, when set, checkpoints the VM after the commands (which
	// stops it) and resumes it once per Resumes list, the VMs side by
	// side, running their commands in rounds; their results follow the
	// commands' in Run's, in the order they ran.
	Checkpoint *Checkpoint
	// Arch is the guest's architecture ("amd64", "arm64"), which selects
	// the QEMU the test needs. "" reads it from the asset directory's
	// manifest.json, or for an image ref from the refs of the image store
	// in HostEnv (else the environment's): the only architecture the ref
	// has, else the host's, as Gondolin picks.
	Arch string
}

// emulatedArm64CPU is the QEMU CPU for an arm64 guest on another host
// unless GONDOLIN_CPU says otherwise: Gondolin's "max" with an
// implementation-defined pointer-authentication algorithm instead of
// QARMA5, which TCG computes several times faster (a boot and first exec
// take about half the time). The guest sees the same CPU features.
const emulatedArm64CPU = "max,pauth-impdef=on"

// Checkpoint is a disk checkpoint of a VM and the VMs resumed from it.
type Checkpoint struct {
	// Path is where the checkpoint (a qcow2 file) is written: absolute.
	Path string `json:"path"`
	// Resumes are the commands of each VM resumed from it.
	Resumes [][]ExecSpec `json:"resumes"`
}

// ExecSpec is one command to run in the guest.
type ExecSpec struct {
	Argv []string `json:"argv"`
	// Env entries "K=V" are sent with the exec request (merged onto the
	// guest agent's environment by the agent).
	Env []string `json:"env,omitempty"`
	Cwd string   `json:"cwd,omitempty"`
	// Stdin, when non-nil, is written to the command's stdin (then EOF).
	Stdin *string `json:"stdin,omitempty"`
	// Background starts the command and goes on with the next ones while it
	// runs (a service they talk to). Its result holds what it wrote until
	// the last command ended, with ExitCode -1 if it was still running.
	Background bool `json:"background,omitempty"`
}

// ExecResult is the outcome of one command.
type ExecResult struct {
	// VM is 0 for the VM booted, i for the i-th resumed from a Checkpoint.
	VM       int      `json:"vm"`
	Argv     []string `json:"argv"`
	ExitCode int      `json:"exitCode"`
	Signal   *int     `json:"signal"`
	Stdout   string   `json:"stdout"`
	Stderr   string   `json:"stderr"`
}

// BootReport describes a Run run.
type BootReport struct {
	Results []ExecResult
	// BootTime is VM.create + start (QEMU boot until the guest agent is up).
	BootTime time.Duration
	// ExecTime covers all commands.
	ExecTime time.Duration
	// Total is the wall time of the node process (includes Node start-up
	// and VM shutdown).
	Total time.Duration
	// Log is the harness's stderr: Gondolin protocol debug output and the
	// guest serial console.
	Log string
}

// HostDir returns testdata/gondolin-host (the Node harness) in the
// module.
func HostDir() (string, error) {
	root, err := testenv.ModuleRoot("go")
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "testdata", "gondolin-host"), nil
}

// Boot boots assetsDir (a Gondolin asset directory, or an image
// ref in Gondolin's image store) with the real Gondolin host under
// QEMU/TCG, runs each command with vm.exec and returns the results in
// order. Gondolin runs qemu-system-x86_64 or qemu-system-aarch64 as the
// guest's manifest says. Any boot or protocol failure fails the test (with
// the guest console in the message). It skips when node, npm or the QEMU
// the guest needs are missing, except under CI, where it fails.
func Boot(t testenv.TB, assetsDir string, opts BootOptions, cmds ...[]string) []ExecResult {
	t.Helper()
	specs := make([]ExecSpec, len(cmds))
	for i, c := range cmds {
		specs[i] = ExecSpec{Argv: c}
	}
	rep, err := Run(t, assetsDir, opts, specs...)
	if err != nil {
		t.Fatalf("gondolintest.Boot(%s, %+v): %v\n--- harness log (tail) ---\n%s", assetsDir, opts, err, testenv.Tail(rep.Log, 12000))
	}
	t.Logf("gondolintest.Boot(%s): boot %s, exec %s, total %s", filepath.Base(assetsDir), rep.BootTime.Round(time.Millisecond), rep.ExecTime.Round(time.Millisecond), rep.Total.Round(time.Millisecond))
	return rep.Results
}

// Run is Boot for callers that expect failures: it returns
// the error (boot failure, timeout, harness error) instead of failing the
// test, with whatever results and log were collected. Missing tools still
// skip (or fail under CI).
func Run(t testenv.TB, assetsDir string, opts BootOptions, specs ...ExecSpec) (*BootReport, error) {
	t.Helper()
	arch := opts.Arch
	if arch == "" {
		arch = guestArch(assetsDir, opts.HostEnv)
	}
	a := testenv.ArchOf(t, arch)
	require.Integration(t, "boots a VM")
	tools := require.Tools(t, "nodejs npm "+a.QemuPkg+" qemu-utils", "node", "npm", a.QemuSystem, "qemu-img")
	hostDir := ensureHarness(t, tools)
	if opts.Timeout == 0 {
		opts.Timeout = 4 * time.Minute
	}
	if opts.Append == "" {
		opts.Append = os.Getenv("DOCKER2VM_TEST_GONDOLIN_APPEND")
	}
	// A directory is passed as an absolute path; anything else (an image
	// ref such as "name:tag") goes to Gondolin's image selector as is.
	image := assetsDir
	if st, err := os.Stat(assetsDir); err == nil && st.IsDir() {
		if image, err = filepath.Abs(assetsDir); err != nil {
			return &BootReport{}, err
		}
	}
	req := map[string]any{
		"imagePath":  image,
		"rootfsMode": opts.RootfsMode,
		"timeoutMs":  opts.Timeout.Milliseconds(),
		"commands":   specs,
		"accel":      "tcg",
	}
	if opts.StartTimeout > 0 {
		req["startTimeoutMs"] = opts.StartTimeout.Milliseconds()
	}
	if opts.Memory != "" {
		req["memory"] = opts.Memory
	}
	if opts.Append != "" {
		req["append"] = opts.Append
	}
	if opts.Checkpoint != nil {
		req["checkpoint"] = opts.Checkpoint
	}
	if opts.VFS {
		req["vfs"] = true
		if len(opts.Mounts) > 0 {
			req["mounts"] = opts.Mounts
		}
	}
	in, err := json.Marshal(req)
	if err != nil {
		return &BootReport{}, err
	}
	rep, err := runHarness(t, hostDir, a, opts, in, len(specs))
	if err != nil {
		// TCG on a loaded two-core machine now and then leaves the guest
		// kernel stuck early, or Gondolin's own init dies in its device
		// setup: before any of docker2vm's code in the guest runs. That
		// boot says nothing of the guest; boot it again, once.
		why := ""
		switch {
		case stalledBeforeInit(rep.Log):
			why = "the emulated kernel stalled before it ran /init"
		case initDiedBeforeAgent(rep.Log):
			why = "Gondolin's init died before it started the guest agent"
		}
		if why != "" {
			t.Logf("%s (%v): booting again; its log ended:\n%s", why, err, testenv.Tail(rep.Log, 1500))
			rep, err = runHarness(t, hostDir, a, opts, in, len(specs))
		}
	}
	return rep, err
}

// initDiedBeforeAgent reports whether a failed boot's log shows
// Gondolin's rootfs init (its "[init]" lines) dying, the kernel panicking
// for it, before it logged that it starts sandboxd: before the image
// environment docker2vm adds is sourced and its agent wrapper runs.
func initDiedBeforeAgent(log string) bool {
	return strings.Contains(log, "Attempted to kill init!") && strings.Contains(log, "[init] ") &&
		!strings.Contains(log, "[init] starting sandboxd")
}

// stalledBeforeInit reports whether a failed boot's log shows the guest
// kernel booting but never reaching its init. (A console-less guest logs
// no kernel lines: never "stalled".)
func stalledBeforeInit(log string) bool {
	return strings.Contains(log, "] Linux version ") && !strings.Contains(log, "] Run /init as init process")
}

// runHarness boots once: the harness given the request in, under the
// one-VM-at-a-time lock.
func runHarness(t testenv.TB, hostDir string, a *testenv.Arch, opts BootOptions, in []byte, nspecs int) (*BootReport, error) {
	t.Helper()

	// One VM at a time across all test processes: TCG guests are CPU-bound
	// and the CI machines have two cores.
	lockStart := time.Now()
	unlock, err := (&builder{t: t, cache: testenv.CacheDir()}).lockFile(".boot.lock")
	if err != nil {
		return &BootReport{}, err
	}
	defer unlock()
	if waited := time.Since(lockStart); waited > time.Second {
		t.Logf("waited %s for another Gondolin VM to finish", waited.Round(time.Millisecond))
	}

	ctx, cancel := context.WithTimeout(context.Background(), opts.Timeout+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, HarnessNode(hostDir), filepath.Join(hostDir, "run.mjs"))
	cmd.Dir = hostDir
	cmd.Stdin = bytes.NewReader(in)
	env := append(os.Environ(), "NODE_NO_WARNINGS=1")
	if a.Name == testenv.ARM64 && !a.Native() && os.Getenv("GONDOLIN_CPU") == "" && !slices.ContainsFunc(opts.HostEnv, func(kv string) bool {
		return strings.HasPrefix(kv, "GONDOLIN_CPU=")
	}) {
		env = append(env, "GONDOLIN_CPU="+emulatedArm64CPU)
	}
	cmd.Env = append(env, opts.HostEnv...)
	// Own process group so a timeout also kills QEMU.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	start := time.Now()
	runErr := cmd.Run()
	rep := &BootReport{Total: time.Since(start), Log: stderr.String()}
	if os.Getenv("DOCKER2VM_TEST_GONDOLIN_LOG") != "" {
		t.Logf("Gondolin harness log:\n%s", rep.Log)
	}

	var out struct {
		Results []ExecResult `json:"results"`
		BootMs  int64        `json:"bootMs"`
		ExecMs  int64        `json:"execMs"`
		Error   string       `json:"error"`
	}
	found := false
	for _, line := range strings.Split(stdout.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, resultMarker); ok {
			if err := json.Unmarshal([]byte(rest), &out); err != nil {
				return rep, fmt.Errorf("harness result: %v", err)
			}
			found = true
		}
	}
	rep.Results = out.Results
	rep.BootTime = time.Duration(out.BootMs) * time.Millisecond
	rep.ExecTime = time.Duration(out.ExecMs) * time.Millisecond
	want := nspecs
	if opts.Checkpoint != nil {
		for _, r := range opts.Checkpoint.Resumes {
			want += len(r)
		}
	}
	switch {
	case !found:
		return rep, fmt.Errorf("harness printed no result (%v); stdout:\n%s", runErr, testenv.Tail(stdout.String(), 4000))
	case out.Error != "":
		return rep, fmt.Errorf("harness: %s", out.Error)
	case runErr != nil:
		return rep, fmt.Errorf("harness: %v", runErr)
	case len(out.Results) != want:
		return rep, fmt.Errorf("harness returned %d results for %d commands", len(out.Results), want)
	}
	return rep, nil
}

const resultMarker = "@@DOCKER2VM-GONDOLIN-RESULT@@ "

// guestArch guesses the architecture Gondolin will boot image (an asset
// directory or an image ref) as: the directory's manifest, or the ref's
// only architecture in the image store, else the host's. The guess only
// picks the QEMU the test requires; Gondolin decides for itself.
func guestArch(image string, hostEnv []string) string {
	if st, err := os.Stat(image); err == nil && st.IsDir() {
		if arch, err := manifestArch(image); err == nil {
			return arch
		}
		return runtime.GOARCH
	}
	store := os.Getenv("GONDOLIN_IMAGE_STORE")
	for _, kv := range hostEnv {
		if v, ok := strings.CutPrefix(kv, "GONDOLIN_IMAGE_STORE="); ok {
			store = v
		}
	}
	if store == "" {
		if c, err := os.UserCacheDir(); err == nil {
			store = filepath.Join(c, "gondolin", "images")
		}
	}
	name, tag := image, "latest"
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		name, tag = image[:i], image[i+1:]
	}
	ents, err := os.ReadDir(filepath.Join(store, "refs", filepath.FromSlash(name), tag))
	if err == nil && len(ents) == 1 {
		if a := testenv.LookupArch(ents[0].Name()); a != nil {
			return a.Name
		}
	}
	return runtime.GOARCH
}

var harnessMu sync.Mutex

// HarnessNode is the Node.js the harness in hostDir (HostDir)
// runs the Gondolin host with: npm's node package, pinned in its
// package.json to a version Gondolin's engines field allows (the system's
// Node runs npm only).
func HarnessNode(hostDir string) string {
	return filepath.Join(hostDir, "node_modules", "node", "bin", "node")
}

// ensureHarness installs the harness's node_modules (npm ci) when they
// are missing: Gondolin and the Node.js that runs it.
func ensureHarness(t testenv.TB, tools map[string]string) string {
	t.Helper()
	dir, err := HostDir()
	if err != nil {
		t.Fatal(err)
	}
	harnessMu.Lock()
	defer harnessMu.Unlock()
	installed := func() bool {
		for _, p := range []string{filepath.Join(dir, "node_modules", "@earendil-works", "gondolin", "package.json"), HarnessNode(dir)} {
			if _, err := os.Stat(p); err != nil {
				return false
			}
		}
		return true
	}
	if installed() {
		return dir
	}
	// Serialize with other test processes.
	b := &builder{t: t, cache: testenv.CacheDir()}
	unlock, err := b.lock()
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if installed() {
		return dir
	}
	args := []string{"ci", "--no-audit", "--no-fund", "--loglevel=error"}
	if _, err := os.Stat(filepath.Join(dir, "package-lock.json")); err != nil {
		args[0] = "install"
	}
	start := time.Now()
	cmd := exec.Command(tools["npm"], args...)
	cmd.Dir = dir
	outb, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("npm %s in %s: %v\n%s", strings.Join(args, " "), dir, err, testenv.Tail(string(outb), 4000))
	}
	t.Logf("npm %s in %s: %s", args[0], dir, time.Since(start).Round(time.Millisecond))
	return dir
}

// CLI runs the real gondolin CLI (from the harness's node_modules)
// with args and extra environment env, returning its combined output. Tools
// are required as for Boot; a non-zero exit is returned as error.
func CLI(t testenv.TB, env []string, args ...string) (string, error) {
	t.Helper()
	require.Integration(t, "runs the Gondolin CLI")
	tools := require.Tools(t, "nodejs npm", "node", "npm")
	dir := ensureHarness(t, tools)
	cli := filepath.Join(dir, "node_modules", "@earendil-works", "gondolin", "dist", "bin", "gondolin.js")
	cmd := exec.Command(HarnessNode(dir), append([]string{cli}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "NODE_NO_WARNINGS=1"), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("gondolin %s: %v", strings.Join(args, " "), err)
	}
	return string(out), nil
}

// Verify fails the test unless "gondolin build --verify DIR"
// accepts the asset directory (manifest, assets, checksums).
func Verify(t testenv.TB, dir string) {
	t.Helper()
	out, err := CLI(t, nil, "build", "--verify", dir)
	if err != nil || !strings.Contains(out, "verified successfully") {
		t.Fatalf("gondolin build --verify %s: %v\n%s", dir, err, out)
	}
}
