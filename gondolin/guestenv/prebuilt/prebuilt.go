// Package prebuilt holds docker2vm-guestenv (package guestenv) built for
// each guest architecture, as docker2vm embeds it. The binaries are
// committed, so that building docker2vm needs nothing but Go; `go
// generate` rebuilds them (gen/main.go) and stamps each with the hash of
// the sources it was built from, which a test checks against the sources.
package prebuilt

import (
	_ "embed"
	"fmt"

	"github.com/docker2vm/docker2vm/internal/arch"
)

//go:generate go run ./gen

var (
	//go:embed docker2vm-guestenv-x86_64
	x86_64 []byte
	//go:embed docker2vm-guestenv-aarch64
	aarch64 []byte
)

// Arches lists the architectures Binary has, as Gondolin names them.
var Arches = []string{"x86_64", "aarch64"}

// Binary returns docker2vm-guestenv for arch, "x86_64" or "aarch64"
// (Gondolin's names). The caller must not modify it.
func Binary(name string) ([]byte, error) {
	if b, ok := arch.Pick(name, x86_64, aarch64); ok {
		return b, nil
	}
	return nil, fmt.Errorf("no docker2vm-guestenv for architecture %q (have x86_64, aarch64)", name)
}
