// Package qemuuser finds the qemu-user emulator that runs foreign
// linux/<arch> programs on this host, one recent enough not to hang a
// forking multi-threaded program, and registers it with binfmt_misc so
// that the kernel runs such programs through it (debootstrap's second
// stage, test binaries of the other architecture, BuildKit RUN steps).
package qemuuser

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/testenv"
)

// minVersion is the oldest qemu-user that runs the tests' foreign
// binaries. qemu-user 7.2 (Debian bookworm's) now and then deadlocks when
// a multi-threaded guest forks: the child, still a copy of qemu, waits
// forever on a lock another thread held, and never reaches exec. A Go test
// that starts a program is such a guest: the arm64 unit tests of package
// buildkit hung about once in 30 runs under 7.2, and in none of 1000 under
// 11.1 (Debian sid's).
var minVersion = version{8, 0}

type version struct{ major, minor int }

func (v version) less(w version) bool {
	return v.major < w.major || v.major == w.major && v.minor < w.minor
}

func (v version) String() string { return fmt.Sprintf("%d.%d", v.major, v.minor) }

var versionRE = regexp.MustCompile(`(?m)^qemu-\S+ version (\d+)\.(\d+)`)

// parseVersion reads the version from the first line of
// `qemu-<arch> --version` ("qemu-aarch64 version 7.2.22 (Debian ...)").
func parseVersion(out string) (version, bool) {
	m := versionRE.FindStringSubmatch(out)
	if m == nil {
		return version{}, false
	}
	major, err1 := strconv.Atoi(m[1])
	minor, err2 := strconv.Atoi(m[2])
	if err1 != nil || err2 != nil {
		return version{}, false
	}
	return version{major, minor}, true
}

// emulatorNames are the names qemu-user's emulator for a goes by, in the
// order they are tried: Debian from trixie on, Fedora's qemu-user and
// Arch name it qemu-<arch> (statically linked on Debian); Debian's and
// Ubuntu's older qemu-user-static, qemu-<arch>-static.
func emulatorNames(a *testenv.Arch) []string {
	return []string{a.Binfmt, a.Binfmt + "-static"}
}

// candidate is one emulator found on the PATH: its path and what its
// --version printed (or the error running it).
type candidate struct {
	path, version string
	err           error
}

// choose returns the first candidate at least minVersion, or an
// error naming what was found and how to get a good one.
func choose(a *testenv.Arch, found []candidate) (string, error) {
	var seen []string
	for _, c := range found {
		if c.err != nil {
			seen = append(seen, fmt.Sprintf("%s does not run (%v)", c.path, c.err))
			continue
		}
		v, ok := parseVersion(c.version)
		switch {
		case !ok:
			seen = append(seen, fmt.Sprintf("%s does not say its version (%q)", c.path, firstLine(c.version)))
		case v.less(minVersion):
			seen = append(seen, fmt.Sprintf("%s is qemu %s, which now and then hangs a forking multi-threaded program", c.path, v))
		default:
			return c.path, nil
		}
	}
	what := strings.Join(emulatorNames(a), " or ")
	if len(seen) == 0 {
		return "", fmt.Errorf("no qemu-user to run %s programs (%s) on this host: run scripts/install-deps.sh as root, which installs one", a.Name, what)
	}
	return "", fmt.Errorf("no qemu-user %s or newer to run %s programs (%s): %s; run scripts/install-deps.sh as root, which installs Debian sid's as /usr/local/bin/%s",
		minVersion, a.Name, what, strings.Join(seen, "; "), a.Binfmt)
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}

// find finds the emulator that runs a's programs on this host.
func find(a *testenv.Arch) (string, error) {
	var found []candidate
	for _, name := range emulatorNames(a) {
		p, ok := require.Look(name)
		if !ok {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, p, "--version").Output()
		cancel()
		found = append(found, candidate{path: p, version: string(out), err: err})
	}
	return choose(a, found)
}

// Path returns the path of the qemu-user emulator that runs linux/arch
// programs on this host (qemu-aarch64 on an amd64 host): one at least
// minVersion. It skips the test without one (fails it under CI).
func Path(t testenv.TB, arch string) string {
	t.Helper()
	p, err := find(testenv.ArchOf(t, arch))
	if err != nil {
		require.Missing(t, "%v", err)
	}
	return p
}

var binfmtMu sync.Mutex

// EnsureBinfmt makes this host run linux/<arch> programs through qemu-user
// (see RegisterBinfmt): for tests that run foreign binaries directly
// (test binaries that start themselves again, BuildKit RUN steps of a
// foreign platform). It fails the test when that cannot be done (skips on
// a laptop without root or qemu-user).
func EnsureBinfmt(t testenv.TB, arch string) {
	t.Helper()
	if err := RegisterBinfmt(t, testenv.ArchOf(t, arch)); err != nil {
		require.Missing(t, "running %s programs on this host: %v (as root: scripts/install-deps.sh)", arch, err)
	}
}

// RegisterBinfmt makes the kernel run the architecture's binaries through
// qemu-user (binfmt_misc), as a chroot into a foreign tree needs (e.g.
// debootstrap's second stage): it mounts binfmt_misc when it is not, and
// registers Path's emulator when no entry exists (an entry that exists
// is the host's and is left alone). Needs root. The registration lasts
// until reboot and is what qemu-user's own binfmt setup would do.
func RegisterBinfmt(t testenv.TB, a *testenv.Arch) error {
	t.Helper()
	if a.Native() {
		return nil
	}
	binfmtMu.Lock()
	defer binfmtMu.Unlock()
	const dir = "/proc/sys/fs/binfmt_misc"
	entry := filepath.Join(dir, a.Binfmt)
	if st, err := os.ReadFile(entry); err == nil {
		if strings.HasPrefix(string(st), "enabled") {
			return nil
		}
		return fmt.Errorf("%s is registered but disabled (echo 1 > %s)", a.Binfmt, entry)
	}
	if _, err := os.Stat(filepath.Join(dir, "register")); err != nil {
		if out, err := exec.Command("mount", "-t", "binfmt_misc", "binfmt_misc", dir).CombinedOutput(); err != nil {
			return fmt.Errorf("mount -t binfmt_misc: %v: %s", err, out)
		}
	}
	line, err := binfmtLine(a)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "register"), []byte(line), 0o200); err != nil {
		if _, e := os.Stat(entry); e == nil {
			return nil // registered meanwhile by someone else
		}
		return fmt.Errorf("registering %s with binfmt_misc: %v", a.Binfmt, err)
	}
	t.Logf("registered %s with binfmt_misc", a.Binfmt)
	return nil
}

// binfmtLine is the binfmt_misc registration of qemu-user for a, naming
// the emulator Path picks (not the one a distribution's binfmt.d line
// names, which may be too old). The F flag opens the interpreter now, so
// it also works inside a chroot that lacks it.
func binfmtLine(a *testenv.Arch) (string, error) {
	interp, err := find(a)
	if err != nil {
		return "", err
	}
	// ELF header: class, data, version, type EXEC or DYN, machine.
	var magic, mask string
	switch a.Name {
	case testenv.ARM64:
		magic = `\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00`
	case testenv.AMD64:
		magic = `\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00`
	}
	mask = `\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff`
	return fmt.Sprintf(":%s:M::%s:%s:%s:F", a.Binfmt, magic, mask, interp), nil
}
