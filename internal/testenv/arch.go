package testenv

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/docker2vm/docker2vm/internal/arch"
	"github.com/docker2vm/docker2vm/internal/require"
)

// The fixtures (base bundle, guest agent, Debian image) are built for a
// target architecture, named as Go and OCI name it: "amd64" or "arm64".
const (
	AMD64 = "amd64"
	ARM64 = "arm64"
)

// Arches lists the architectures the fixtures can be built for.
var Arches = []string{AMD64, ARM64}

// gdArch is what differs between the target architectures.
type gdArch struct {
	name     string      // Go, OCI and Debian name: amd64, arm64
	gondolin string      // manifest config.arch: x86_64, aarch64
	machine  elf.Machine // of the static binaries we put in the guest
	// qemuSystem boots a guest (package qemuPkg).
	qemuSystem, qemuPkg string
	// binfmt names qemu-user's binfmt_misc entry, and its emulator (see
	// qemuUserNames).
	binfmt string
}

var gdArches = map[string]*gdArch{
	AMD64: {name: AMD64, gondolin: "x86_64", machine: elf.EM_X86_64,
		qemuSystem: "qemu-system-x86_64", qemuPkg: "qemu-system-x86", binfmt: "qemu-x86_64"},
	ARM64: {name: ARM64, gondolin: "aarch64", machine: elf.EM_AARCH64,
		qemuSystem: "qemu-system-aarch64", qemuPkg: "qemu-system-arm", binfmt: "qemu-aarch64"},
}

// gdArchOf returns the table entry for arch ("amd64", "arm64"; the
// Gondolin names x86_64 and aarch64 and an OS/ARCH platform are accepted
// too). It fails the test for anything else: that is a bug in the caller.
func gdArchOf(t TB, arch string) *gdArch {
	t.Helper()
	if a := gdLookupArch(arch); a != nil {
		return a
	}
	t.Fatalf("testenv: unsupported architecture %q (want one of %v)", arch, Arches)
	return nil
}

func gdLookupArch(name string) *gdArch {
	a := strings.ToLower(strings.TrimSpace(name))
	if rest, ok := strings.CutPrefix(a, "linux/"); ok {
		a, _, _ = strings.Cut(rest, "/") // linux/arm64/v8
	}
	if n, ok := arch.Parse(a); ok {
		return gdArches[n.OCI]
	}
	return nil
}

// native reports whether the host runs the architecture's binaries
// without emulation.
func (a *gdArch) native() bool { return a.name == runtime.GOARCH }

// debPackage qualifies a Debian package name with the architecture
// ("busybox-static:arm64"): apt accepts the qualifier for the native
// architecture too, so one spelling serves both.
func (a *gdArch) debPackage(pkg string) string { return pkg + ":" + a.name }

// gdIsStatic reports whether p is a statically linked ELF executable for
// machine m.
func gdIsStatic(p string, m elf.Machine) bool {
	f, err := elf.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	if f.Machine != m {
		return false
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// ArchOfELF returns "amd64" or "arm64" for an ELF binary's contents, ""
// for anything else.
func ArchOfELF(b []byte) string {
	if len(b) < 20 || string(b[:4]) != "\x7fELF" {
		return ""
	}
	// e_machine is at offset 18 in both ELF classes (little-endian here).
	m := elf.Machine(uint16(b[18]) | uint16(b[19])<<8)
	for _, a := range gdArches {
		if a.machine == m {
			return a.name
		}
	}
	return ""
}

// gdRequireDebArch skips (fails under CI) unless apt can fetch
// packages of the architecture: the native one, or a foreign one added
// with dpkg --add-architecture (scripts/install-deps.sh does that).
func gdRequireDebArch(t TB, a *gdArch) {
	t.Helper()
	native, err := exec.Command("dpkg", "--print-architecture").Output()
	if err == nil && strings.TrimSpace(string(native)) == a.name {
		return
	}
	foreign, _ := exec.Command("dpkg", "--print-foreign-architectures").Output()
	for _, f := range strings.Fields(string(foreign)) {
		if f == a.name {
			return
		}
	}
	require.Missing(t, "apt has no %s packages (as root: dpkg --add-architecture %s && apt-get update, or run scripts/install-deps.sh)", a.name, a.name)
}

var gdBinfmtMu sync.Mutex

// EnsureBinfmt makes this host run linux/<arch> programs through qemu-user
// (see gdEnsureBinfmt): for tests that run foreign binaries directly
// (test binaries that start themselves again, BuildKit RUN steps of a
// foreign platform). It fails the test when that cannot be done (skips on
// a laptop without root or qemu-user).
func EnsureBinfmt(t TB, arch string) {
	t.Helper()
	if err := gdEnsureBinfmt(t, gdArchOf(t, arch)); err != nil {
		require.Missing(t, "running %s programs on this host: %v (as root: scripts/install-deps.sh)", arch, err)
	}
}

// gdEnsureBinfmt makes the kernel run the architecture's binaries through
// qemu-user (binfmt_misc), as a chroot into a foreign tree needs (e.g.
// debootstrap's second stage): it mounts binfmt_misc when it is not, and
// registers QemuUser's emulator when no entry exists (an entry that exists
// is the host's and is left alone). Needs root. The registration lasts
// until reboot and is what qemu-user's own binfmt setup would do.
func gdEnsureBinfmt(t TB, a *gdArch) error {
	t.Helper()
	if a.native() {
		return nil
	}
	gdBinfmtMu.Lock()
	defer gdBinfmtMu.Unlock()
	const dir = "/proc/sys/fs/binfmt_misc"
	entry := filepath.Join(dir, a.binfmt)
	if st, err := os.ReadFile(entry); err == nil {
		if strings.HasPrefix(string(st), "enabled") {
			return nil
		}
		return fmt.Errorf("%s is registered but disabled (echo 1 > %s)", a.binfmt, entry)
	}
	if _, err := os.Stat(filepath.Join(dir, "register")); err != nil {
		if out, err := exec.Command("mount", "-t", "binfmt_misc", "binfmt_misc", dir).CombinedOutput(); err != nil {
			return fmt.Errorf("mount -t binfmt_misc: %v: %s", err, out)
		}
	}
	line, err := gdBinfmtLine(a)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "register"), []byte(line), 0o200); err != nil {
		if _, e := os.Stat(entry); e == nil {
			return nil // registered meanwhile by someone else
		}
		return fmt.Errorf("registering %s with binfmt_misc: %v", a.binfmt, err)
	}
	t.Logf("registered %s with binfmt_misc", a.binfmt)
	return nil
}

// gdBinfmtLine is the binfmt_misc registration of qemu-user for a, naming
// the emulator QemuUser picks (not the one a distribution's binfmt.d line
// names, which may be too old). The F flag opens the interpreter now, so
// it also works inside a chroot that lacks it.
func gdBinfmtLine(a *gdArch) (string, error) {
	interp, err := qemuUserPath(a)
	if err != nil {
		return "", err
	}
	// ELF header: class, data, version, type EXEC or DYN, machine.
	var magic, mask string
	switch a.name {
	case ARM64:
		magic = `\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00`
	case AMD64:
		magic = `\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00`
	}
	mask = `\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff`
	return fmt.Sprintf(":%s:M::%s:%s:%s:F", a.binfmt, magic, mask, interp), nil
}
