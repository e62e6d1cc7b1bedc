package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
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
}

// ExecResult is the outcome of one command.
type ExecResult struct {
	Argv     []string `json:"argv"`
	ExitCode int      `json:"exitCode"`
	Signal   *int     `json:"signal"`
	Stdout   string   `json:"stdout"`
	Stderr   string   `json:"stderr"`
}

// BootReport describes a RunGondolin run.
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

// GondolinHostDir returns testdata/gondolin-host (the Node harness) in the
// module.
func GondolinHostDir() (string, error) {
	root, err := gdModuleRoot("go")
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "testdata", "gondolin-host"), nil
}

// BootGondolin boots assetsDir (a Gondolin asset directory) with the real
// Gondolin host under QEMU/TCG, runs each command with vm.exec and returns
// the results in order. Any boot or protocol failure fails the test (with
// the guest console in the message). It skips when node, npm or QEMU are
// missing, except under CI=true, where it fails.
func BootGondolin(t TB, assetsDir string, opts BootOptions, cmds ...[]string) []ExecResult {
	t.Helper()
	specs := make([]ExecSpec, len(cmds))
	for i, c := range cmds {
		specs[i] = ExecSpec{Argv: c}
	}
	rep, err := RunGondolin(t, assetsDir, opts, specs...)
	if err != nil {
		t.Fatalf("BootGondolin(%s, %+v): %v\n--- harness log (tail) ---\n%s", assetsDir, opts, err, gdTail(rep.Log, 12000))
	}
	t.Logf("BootGondolin(%s): boot %s, exec %s, total %s", filepath.Base(assetsDir), rep.BootTime.Round(time.Millisecond), rep.ExecTime.Round(time.Millisecond), rep.Total.Round(time.Millisecond))
	return rep.Results
}

// RunGondolin is BootGondolin for callers that expect failures: it returns
// the error (boot failure, timeout, harness error) instead of failing the
// test, with whatever results and log were collected. Missing tools still
// skip (or fail under CI=true).
func RunGondolin(t TB, assetsDir string, opts BootOptions, specs ...ExecSpec) (*BootReport, error) {
	t.Helper()
	tools := gdRequireTools(t, "nodejs npm "+GondolinBootPackages, "node", "npm", "qemu-system-x86_64", "qemu-img")
	hostDir := gdEnsureHarness(t, tools)
	if opts.Timeout == 0 {
		opts.Timeout = 4 * time.Minute
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
	in, err := json.Marshal(req)
	if err != nil {
		return &BootReport{}, err
	}

	// One VM at a time across all test processes: TCG guests are CPU-bound
	// and the CI machines have two cores.
	lockStart := time.Now()
	unlock, err := (&gdBuilder{t: t, cache: GondolinCacheDir()}).lockFile(".boot.lock")
	if err != nil {
		return &BootReport{}, err
	}
	defer unlock()
	if waited := time.Since(lockStart); waited > time.Second {
		t.Logf("waited %s for another Gondolin VM to finish", waited.Round(time.Millisecond))
	}

	ctx, cancel := context.WithTimeout(context.Background(), opts.Timeout+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, tools["node"], filepath.Join(hostDir, "run.mjs"))
	cmd.Dir = hostDir
	cmd.Stdin = bytes.NewReader(in)
	cmd.Env = append(append(os.Environ(), "NODE_NO_WARNINGS=1"), opts.HostEnv...)
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
		if rest, ok := strings.CutPrefix(line, gdResultMarker); ok {
			if err := json.Unmarshal([]byte(rest), &out); err != nil {
				return rep, fmt.Errorf("harness result: %v", err)
			}
			found = true
		}
	}
	rep.Results = out.Results
	rep.BootTime = time.Duration(out.BootMs) * time.Millisecond
	rep.ExecTime = time.Duration(out.ExecMs) * time.Millisecond
	switch {
	case !found:
		return rep, fmt.Errorf("harness printed no result (%v); stdout:\n%s", runErr, gdTail(stdout.String(), 4000))
	case out.Error != "":
		return rep, fmt.Errorf("harness: %s", out.Error)
	case runErr != nil:
		return rep, fmt.Errorf("harness: %v", runErr)
	case len(out.Results) != len(specs):
		return rep, fmt.Errorf("harness returned %d results for %d commands", len(out.Results), len(specs))
	}
	return rep, nil
}

const gdResultMarker = "@@DOCKER2VM-GONDOLIN-RESULT@@ "

var gdHarnessMu sync.Mutex

// gdEnsureHarness installs the harness's node_modules (npm ci, offline
// cache first) when they are missing.
func gdEnsureHarness(t TB, tools map[string]string) string {
	t.Helper()
	dir, err := GondolinHostDir()
	if err != nil {
		t.Fatal(err)
	}
	gdHarnessMu.Lock()
	defer gdHarnessMu.Unlock()
	marker := filepath.Join(dir, "node_modules", "@earendil-works", "gondolin", "package.json")
	if _, err := os.Stat(marker); err == nil {
		return dir
	}
	// Serialize with other test processes.
	b := &gdBuilder{t: t, cache: GondolinCacheDir()}
	unlock, err := b.lock()
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if _, err := os.Stat(marker); err == nil {
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
		t.Fatalf("npm %s in %s: %v\n%s", strings.Join(args, " "), dir, err, gdTail(string(outb), 4000))
	}
	t.Logf("npm %s in %s: %s", args[0], dir, time.Since(start).Round(time.Millisecond))
	return dir
}

// GondolinCLI runs the real gondolin CLI (from the harness's node_modules)
// with args and extra environment env, returning its combined output. Tools
// are required as for BootGondolin; a non-zero exit is returned as error.
func GondolinCLI(t TB, env []string, args ...string) (string, error) {
	t.Helper()
	tools := gdRequireTools(t, "nodejs npm", "node", "npm")
	dir := gdEnsureHarness(t, tools)
	cli := filepath.Join(dir, "node_modules", "@earendil-works", "gondolin", "dist", "bin", "gondolin.js")
	cmd := exec.Command(tools["node"], append([]string{cli}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "NODE_NO_WARNINGS=1"), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("gondolin %s: %v", strings.Join(args, " "), err)
	}
	return string(out), nil
}

// GondolinVerify fails the test unless "gondolin build --verify DIR"
// accepts the asset directory (manifest, assets, checksums).
func GondolinVerify(t TB, dir string) {
	t.Helper()
	out, err := GondolinCLI(t, nil, "build", "--verify", dir)
	if err != nil || !strings.Contains(out, "verified successfully") {
		t.Fatalf("gondolin build --verify %s: %v\n%s", dir, err, out)
	}
}
