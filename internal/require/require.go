// Package require is the one place that decides whether a test can run on
// this machine, and what happens when it cannot.
//
// A test that needs something the machine may lack (a program, root) asks
// for it here. On a developer's machine a missing prerequisite skips the
// test; under CI (the environment variable CI is "true" or "1", as CI
// systems and .ci/run set it) it fails the test, so a CI run never passes
// by skipping.
//
// An integration test (one that starts a registry, builds a fixture, boots
// a VM, runs BuildKit, mounts a filesystem or is heavy) calls Integration
// first: `go test -short` skips exactly those, and `make test-unit` runs
// the rest.
//
// The package imports only the standard library, so the tests of every
// package, ext4's and fstree's included, can use it.
package require

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TB is the part of testing.TB the gate uses: *testing.T and *testing.B
// satisfy it, and so do the fixtures' TB outside `go test` (the demo's
// console reporter) and the recorder this package's tests use.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
}

// CI reports whether this is a CI run, where a missing prerequisite is a
// failure: CI is "true" or "1".
func CI() bool {
	v := os.Getenv("CI")
	return v == "true" || v == "1"
}

// Missing reports a missing prerequisite: it skips the test, or fails it
// under CI. The message says what is missing and how to get it.
func Missing(t TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if CI() {
		t.Fatalf("%s (CI=%s: a missing prerequisite fails the test)", msg, os.Getenv("CI"))
		return
	}
	t.Skipf("skipped: %s", msg)
}

// Integrating reports whether integration tests run: not under -short.
// Outside `go test` (the demo and the benchmark reuse the fixtures) it is
// true.
func Integrating() bool {
	return !testing.Testing() || !testing.Short()
}

// Integration marks the test as an integration test: under -short it is
// skipped, saying what it would have done (what, e.g. "boots a VM").
func Integration(t TB, what string) {
	t.Helper()
	if !Integrating() {
		t.Skipf("integration test (%s): skipped with -short", what)
	}
}

// Root requires the test to run as root; why says what for ("to mount
// a tmpfs").
func Root(t TB, why string) {
	t.Helper()
	if euid := os.Geteuid(); euid != 0 {
		Missing(t, "needs root %s (euid %d)", why, euid)
	}
}

// installHint is how to get the programs the tests use.
const installHint = "`make deps` (as root) installs every tool the tests use"

// Tool returns the path of the program name, found as Look finds it. When
// it is missing, the test skips (fails under CI) and Tool returns "".
func Tool(t TB, name string) string {
	t.Helper()
	if p, ok := Look(name); ok {
		return p
	}
	Missing(t, "%s not found (%s)", name, installHint)
	return ""
}

// Tools is Tool for several programs, reporting every missing one at once;
// pkgs, when not empty, names the Debian packages that provide them. It
// returns the paths by name (nil when one is missing).
func Tools(t TB, pkgs string, names ...string) map[string]string {
	t.Helper()
	paths := map[string]string{}
	var missing []string
	for _, n := range names {
		if p, ok := Look(n); ok {
			paths[n] = p
		} else {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return paths
	}
	hint := installHint
	if pkgs != "" {
		hint = "apt-get install " + pkgs + "; " + hint
	}
	Missing(t, "%s not found (%s)", strings.Join(missing, ", "), hint)
	return nil
}

// sbinDirs are searched after PATH: a non-root PATH often lacks them, and
// e2fsprogs, depmod and debootstrap live there on Debian.
var sbinDirs = []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"}

// Look finds the program name without the gate: an absolute or relative
// path as given, else on PATH, else in /usr/sbin, /sbin, /usr/bin or /bin,
// and "go" also in the toolchain that runs the tests.
func Look(name string) (string, bool) {
	if p, err := exec.LookPath(name); err == nil {
		return p, true
	}
	if name == "" || strings.Contains(name, "/") {
		return "", false
	}
	for _, dir := range sbinDirs {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, true
		}
	}
	if name == "go" {
		p := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(p); err == nil {
			return p, true
		}
	}
	return "", false
}
