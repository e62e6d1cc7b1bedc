package testenv

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/docker2vm/docker2vm/internal/require"
)

// qemuUserMin is the oldest qemu-user that runs the tests' foreign
// binaries. qemu-user 7.2 (Debian bookworm's) now and then deadlocks when
// a multi-threaded guest forks: the child, still a copy of qemu, waits
// forever on a lock another thread held, and never reaches exec. A Go test
// that starts a program is such a guest: the arm64 unit tests of package
// buildkit hung about once in 30 runs under 7.2, and in none of 1000 under
// 11.1 (Debian sid's).
var qemuUserMin = qemuVersion{8, 0}

type qemuVersion struct{ major, minor int }

func (v qemuVersion) less(w qemuVersion) bool {
	return v.major < w.major || v.major == w.major && v.minor < w.minor
}

func (v qemuVersion) String() string { return fmt.Sprintf("%d.%d", v.major, v.minor) }

var qemuVersionRE = regexp.MustCompile(`(?m)^qemu-\S+ version (\d+)\.(\d+)`)

// parseQemuVersion reads the version from the first line of
// `qemu-<arch> --version` ("qemu-aarch64 version 7.2.22 (Debian ...)").
func parseQemuVersion(out string) (qemuVersion, bool) {
	m := qemuVersionRE.FindStringSubmatch(out)
	if m == nil {
		return qemuVersion{}, false
	}
	major, err1 := strconv.Atoi(m[1])
	minor, err2 := strconv.Atoi(m[2])
	if err1 != nil || err2 != nil {
		return qemuVersion{}, false
	}
	return qemuVersion{major, minor}, true
}

// qemuUserNames are the names qemu-user's emulator for a goes by, in the
// order they are tried: Debian from trixie on, Fedora's qemu-user and
// Arch name it qemu-<arch> (statically linked on Debian); Debian's and
// Ubuntu's older qemu-user-static, qemu-<arch>-static.
func (a *Arch) qemuUserNames() []string {
	return []string{a.Binfmt, a.Binfmt + "-static"}
}

// qemuCandidate is one emulator found on the PATH: its path and what its
// --version printed (or the error running it).
type qemuCandidate struct {
	path, version string
	err           error
}

// chooseQemuUser returns the first candidate at least qemuUserMin, or an
// error naming what was found and how to get a good one.
func chooseQemuUser(a *Arch, found []qemuCandidate) (string, error) {
	var seen []string
	for _, c := range found {
		if c.err != nil {
			seen = append(seen, fmt.Sprintf("%s does not run (%v)", c.path, c.err))
			continue
		}
		v, ok := parseQemuVersion(c.version)
		switch {
		case !ok:
			seen = append(seen, fmt.Sprintf("%s does not say its version (%q)", c.path, firstLine(c.version)))
		case v.less(qemuUserMin):
			seen = append(seen, fmt.Sprintf("%s is qemu %s, which now and then hangs a forking multi-threaded program", c.path, v))
		default:
			return c.path, nil
		}
	}
	what := strings.Join(a.qemuUserNames(), " or ")
	if len(seen) == 0 {
		return "", fmt.Errorf("no qemu-user to run %s programs (%s) on this host: run scripts/install-deps.sh as root, which installs one", a.Name, what)
	}
	return "", fmt.Errorf("no qemu-user %s or newer to run %s programs (%s): %s; run scripts/install-deps.sh as root, which installs Debian sid's as /usr/local/bin/%s",
		qemuUserMin, a.Name, what, strings.Join(seen, "; "), a.Binfmt)
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}

// qemuUserPath finds the emulator that runs a's programs on this host.
func qemuUserPath(a *Arch) (string, error) {
	var found []qemuCandidate
	for _, name := range a.qemuUserNames() {
		p, ok := require.Look(name)
		if !ok {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, p, "--version").Output()
		cancel()
		found = append(found, qemuCandidate{path: p, version: string(out), err: err})
	}
	return chooseQemuUser(a, found)
}

// QemuUser returns the path of the qemu-user emulator that runs linux/arch
// programs on this host (qemu-aarch64 on an amd64 host): one at least
// qemuUserMin. It skips the test without one (fails it under CI).
func QemuUser(t TB, arch string) string {
	t.Helper()
	p, err := qemuUserPath(ArchOf(t, arch))
	if err != nil {
		require.Missing(t, "%v", err)
	}
	return p
}
