package testenv

import (
	"debug/elf"
	"runtime"
	"strings"

	"github.com/docker2vm/docker2vm/internal/arch"
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
