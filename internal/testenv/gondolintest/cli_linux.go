//go:build linux

package gondolintest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/term"
	"github.com/docker2vm/docker2vm/internal/testenv"
)

// CLIOptions configure RunCLI.
type CLIOptions struct {
	// Env adds "K=V" entries to the CLI's environment
	// (GONDOLIN_GUEST_DIR, GONDOLIN_IMAGE_STORE, ...).
	Env []string
	// Arch is the architecture of the guest the command boots, for the
	// QEMU it needs; "" for the host's.
	Arch string
	// Terminal runs the CLI on a pseudo-terminal and types Input into it
	// (an interactive `gondolin bash`); the output is what the terminal
	// showed.
	Terminal bool
	Input    string
	// Timeout bounds the run; default 4 minutes.
	Timeout time.Duration
}

// Harness is the directory of the Gondolin host harness
// (testdata/gondolin-host), its node_modules installed: Gondolin's package
// and the Node.js it runs under (HarnessNode).
func Harness(t testenv.TB) string {
	t.Helper()
	tools := require.Tools(t, "nodejs npm", "node", "npm")
	return ensureHarness(t, tools)
}

// HostCommand prepares argv (a program of the Gondolin host: the CLI, or
// node with a script that calls VM.create) for a guest of arch the way
// RunCLI runs the CLI: in the harness directory, in a mount
// namespace of its own where /dev/kvm is read-only (so that Gondolin falls
// back to TCG), with the emulated arm64 CPU where needed. The caller runs
// it, then calls release: one VM boots at a time.
func HostCommand(ctx context.Context, t testenv.TB, arch string, argv ...string) (*exec.Cmd, func()) {
	t.Helper()
	require.Root(t, "to hide /dev/kvm from the Gondolin host in a mount namespace")
	a := testenv.ArchOf(t, arch)
	tools := require.Tools(t, "nodejs npm util-linux "+a.QemuPkg+" qemu-utils", "node", "npm", "unshare", a.QemuSystem, "qemu-img")
	dir := ensureHarness(t, tools)
	unlock, err := (&builder{t: t, cache: testenv.CacheDir()}).lockFile(".boot.lock")
	if err != nil {
		t.Fatal(err)
	}
	ro := filepath.Join(t.TempDir(), "kvm")
	if err := os.WriteFile(ro, nil, 0o600); err != nil {
		unlock()
		t.Fatal(err)
	}
	script := `if [ -e /dev/kvm ]; then mount --bind "$1" /dev/kvm && mount -o remount,bind,ro /dev/kvm || exit 125; fi; shift; exec "$@"`
	cmd := exec.CommandContext(ctx, tools["unshare"], append([]string{"--mount", "--propagation", "private", "sh", "-c", script, "sh", ro}, argv...)...)
	cmd.Dir = dir
	env := append(os.Environ(), "NODE_NO_WARNINGS=1")
	if a.Name == testenv.ARM64 && !a.Native() && os.Getenv("GONDOLIN_CPU") == "" {
		env = append(env, "GONDOLIN_CPU="+emulatedArm64CPU)
	}
	cmd.Env = env
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd, func() { unlock() }
}

// RunCLI runs the gondolin CLI with args as a user types it, for
// the commands that boot a VM (exec, bash, image pull): under the
// harness's Node.js, one VM at a time. The CLI has no accelerator option
// and takes KVM whenever /dev/kvm is writable; this machine's /dev/kvm
// cannot run a stock kernel (docs/gondolin-contract.md), so the CLI runs
// in a mount namespace of its own where /dev/kvm is read-only, and falls
// back to TCG as it does on a host without KVM. It returns the combined
// output and the error of a non-zero exit.
func RunCLI(t testenv.TB, opts CLIOptions, args ...string) (string, error) {
	t.Helper()
	require.Integration(t, "runs the Gondolin CLI")
	arch := opts.Arch
	if arch == "" {
		arch = runtime.GOARCH
	}
	dir := Harness(t)
	if opts.Timeout == 0 {
		opts.Timeout = 4 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.Timeout)
	defer cancel()
	cli := filepath.Join(dir, "node_modules", "@earendil-works", "gondolin", "dist", "bin", "gondolin.js")
	cmd, release := HostCommand(ctx, t, arch, append([]string{HarnessNode(dir), cli}, args...)...)
	defer release()
	cmd.Env = append(cmd.Env, opts.Env...)
	if !opts.Terminal {
		out, err := cmd.CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("gondolin %s: %v", strings.Join(args, " "), err)
		}
		return string(out), nil
	}

	master, slave, err := term.OpenPTY()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		slave.Close()
		return "", err
	}
	slave.Close()
	var mu sync.Mutex
	var screen bytes.Buffer
	read := make(chan struct{})
	go func() {
		defer close(read)
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			mu.Lock()
			screen.Write(buf[:n])
			mu.Unlock()
			// Answer a cursor position query (busybox's line editor asks)
			// as a terminal does.
			if bytes.Contains(buf[:n], []byte("\x1b[6n")) {
				_, _ = io.WriteString(master, "\x1b[1;1R")
			}
			if err != nil {
				return
			}
		}
	}()
	// Type once the guest's shell has shown its prompt ("# " or "$ "), as
	// a person would.
	prompt := regexp.MustCompile(`[#$] (\x1b\[6n)?$`)
	deadline := time.Now().Add(opts.Timeout / 2)
	for time.Now().Before(deadline) {
		mu.Lock()
		shown := prompt.MatchString(screen.String())
		mu.Unlock()
		if shown {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := io.WriteString(master, opts.Input); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	select {
	case <-read:
	case <-time.After(2 * time.Second):
	}
	mu.Lock()
	defer mu.Unlock()
	if err != nil {
		return screen.String(), fmt.Errorf("gondolin %s: %v", strings.Join(args, " "), err)
	}
	return screen.String(), nil
}
