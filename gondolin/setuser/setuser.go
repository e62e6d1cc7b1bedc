// Package setuser holds docker2vm-setuser, the tiny static program the
// guest's entrypoint runner uses to run the image's command as its USER:
//
//	docker2vm-setuser UID GID GIDS PATH ARGV0 [ARG...]
//
// It sets the supplementary groups (GIDS: comma-separated decimal gids, or
// empty for none), the gid and the uid, in that order, then execs PATH
// with the arguments ARGV0 ARG... and its own environment. It exits 125 on
// a bad argument (numbers are decimal digits only, at most 4294967294),
// 126 when a set*id call fails or PATH cannot be executed, and 127 when
// PATH does not exist, as `docker run` does; each with a message on
// stderr.
//
// It is written in assembly (asm/ARCH.s) with raw system calls, so it
// runs in any root filesystem: no libc, no loader, no busybox applets.
// generate.sh assembles the sources with GNU binutils into the committed
// files docker2vm-setuser-ARCH, which are embedded here, so building
// docker2vm needs no assembler or C toolchain.
package setuser

import (
	_ "embed"
	"fmt"

	"github.com/docker2vm/docker2vm/internal/arch"
)

//go:generate sh generate.sh

// Name is the program's file name in the guest.
const Name = "docker2vm-setuser"

// Exit statuses of the program.
const (
	ExitBadArgument = 125 // a malformed argument or too few of them
	ExitCannotRun   = 126 // a set*id call failed, or PATH cannot be executed
	ExitNotFound    = 127 // PATH does not exist
)

var (
	//go:embed docker2vm-setuser-x86_64
	x86_64 []byte
	//go:embed docker2vm-setuser-aarch64
	aarch64 []byte
)

// Arches lists the architectures Binary has, as Gondolin names them.
var Arches = []string{"x86_64", "aarch64"}

// Binary returns the program for arch, "x86_64" or "aarch64" (Gondolin's
// names; see gondolin.NormalizeArch). The caller must not modify it.
func Binary(name string) ([]byte, error) {
	if b, ok := arch.Pick(name, x86_64, aarch64); ok {
		return b, nil
	}
	return nil, fmt.Errorf("setuser: no %s for architecture %q (have x86_64, aarch64)", Name, name)
}
