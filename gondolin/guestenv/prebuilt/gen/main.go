// Command gen builds docker2vm-guestenv for every guest architecture into
// package prebuilt's directory, stamped with the hash of its sources (guestenv's sourceHash).
// Run it with `go generate ./gondolin/guestenv/prebuilt` from the module.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/docker2vm/docker2vm/gondolin/guestenv/prebuilt/source"
	"github.com/docker2vm/docker2vm/internal/arch"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run() error {
	root, err := source.ModuleRoot()
	if err != nil {
		return err
	}
	sum, err := source.Hash(root)
	if err != nil {
		return err
	}
	out := filepath.Join(root, "gondolin", "guestenv", "prebuilt")
	for _, a := range []arch.Arch{arch.AMD64, arch.ARM64} {
		dst := filepath.Join(out, "docker2vm-guestenv-"+a.Gondolin)
		cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false",
			"-ldflags=-s -w -buildid= -X "+source.StampVar+"="+sum,
			"-o", dst, "./gondolin/guestenv/cmd/docker2vm-guestenv")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+a.OCI, "GOFLAGS=")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building for %s: %w", a.Gondolin, err)
		}
	}
	return nil
}
