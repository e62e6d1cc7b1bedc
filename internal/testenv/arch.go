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

// Arch is what differs between the target architectures.
type Arch struct {
	Name     string      // Go, OCI and Debian name: amd64, arm64
	Gondolin string      // manifest config.arch: x86_64, aarch64
	Machine  elf.Machine // of the static binaries we put in the guest
	// QemuSystem boots a guest (package QemuPkg).
	QemuSystem, QemuPkg string
	// Binfmt names qemu-user's binfmt_misc entry, and its emulator.
	Binfmt string
}

var arches = map[string]*Arch{
	AMD64: {Name: AMD64, Gondolin: "x86_64", Machine: elf.EM_X86_64,
		QemuSystem: "qemu-system-x86_64", QemuPkg: "qemu-system-x86", Binfmt: "qemu-x86_64"},
	ARM64: {Name: ARM64, Gondolin: "aarch64", Machine: elf.EM_AARCH64,
		QemuSystem: "qemu-system-aarch64", QemuPkg: "qemu-system-arm", Binfmt: "qemu-aarch64"},
}

// ArchOf returns the table entry for arch ("amd64", "arm64"; the
// Gondolin names x86_64 and aarch64 and an OS/ARCH platform are accepted
// too). It fails the test for anything else: that is a bug in the caller.
func ArchOf(t TB, arch string) *Arch {
	t.Helper()
	if a := LookupArch(arch); a != nil {
		return a
	}
	t.Fatalf("testenv: unsupported architecture %q (want one of %v)", arch, Arches)
	return nil
}

// LookupArch is ArchOf for names from elsewhere than the test (a
// manifest, an image store): nil for an architecture not in the table.
func LookupArch(name string) *Arch {
	a := strings.ToLower(strings.TrimSpace(name))
	if rest, ok := strings.CutPrefix(a, "linux/"); ok {
		a, _, _ = strings.Cut(rest, "/") // linux/arm64/v8
	}
	if n, ok := arch.Parse(a); ok {
		return arches[n.OCI]
	}
	return nil
}

// Native reports whether the host runs the architecture's binaries
// without emulation.
func (a *Arch) Native() bool { return a.Name == runtime.GOARCH }

// DebPackage qualifies a Debian package name with the architecture
// ("busybox-static:arm64"): apt accepts the qualifier for the native
// architecture too, so one spelling serves both.
func (a *Arch) DebPackage(pkg string) string { return pkg + ":" + a.Name }

// ArchOfELF returns "amd64" or "arm64" for an ELF binary's contents, ""
// for anything else.
func ArchOfELF(b []byte) string {
	if len(b) < 20 || string(b[:4]) != "\x7fELF" {
		return ""
	}
	// e_machine is at offset 18 in both ELF classes (little-endian here).
	m := elf.Machine(uint16(b[18]) | uint16(b[19])<<8)
	for _, a := range arches {
		if a.Machine == m {
			return a.Name
		}
	}
	return ""
}

var gdBinfmtMu sync.Mutex

// EnsureBinfmt makes this host run linux/<arch> programs through qemu-user
// (see RegisterBinfmt): for tests that run foreign binaries directly
// (test binaries that start themselves again, BuildKit RUN steps of a
// foreign platform). It fails the test when that cannot be done (skips on
// a laptop without root or qemu-user).
func EnsureBinfmt(t TB, arch string) {
	t.Helper()
	if err := RegisterBinfmt(t, ArchOf(t, arch)); err != nil {
		require.Missing(t, "running %s programs on this host: %v (as root: scripts/install-deps.sh)", arch, err)
	}
}

// RegisterBinfmt makes the kernel run the architecture's binaries through
// qemu-user (binfmt_misc), as a chroot into a foreign tree needs (e.g.
// debootstrap's second stage): it mounts binfmt_misc when it is not, and
// registers QemuUser's emulator when no entry exists (an entry that exists
// is the host's and is left alone). Needs root. The registration lasts
// until reboot and is what qemu-user's own binfmt setup would do.
func RegisterBinfmt(t TB, a *Arch) error {
	t.Helper()
	if a.Native() {
		return nil
	}
	gdBinfmtMu.Lock()
	defer gdBinfmtMu.Unlock()
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
	line, err := gdBinfmtLine(a)
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

// gdBinfmtLine is the binfmt_misc registration of qemu-user for a, naming
// the emulator QemuUser picks (not the one a distribution's binfmt.d line
// names, which may be too old). The F flag opens the interpreter now, so
// it also works inside a chroot that lacks it.
func gdBinfmtLine(a *Arch) (string, error) {
	interp, err := qemuUserPath(a)
	if err != nil {
		return "", err
	}
	// ELF header: class, data, version, type EXEC or DYN, machine.
	var magic, mask string
	switch a.Name {
	case ARM64:
		magic = `\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00`
	case AMD64:
		magic = `\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00`
	}
	mask = `\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff`
	return fmt.Sprintf(":%s:M::%s:%s:%s:F", a.Binfmt, magic, mask, interp), nil
}
