// Command binfmt makes this host run linux/ARCH programs through qemu-user
// (binfmt_misc), with the same code the tests use (testenv.EnsureBinfmt):
//
//	go run ./internal/testenv/cmd/binfmt arm64
//
// `make test-arm64` runs it before the arm64 unit tests, some of which
// start their own binary again. Needs root and qemu-user (see
// testenv.QemuUser).
package main

import (
	"fmt"
	"os"

	"github.com/docker2vm/docker2vm/internal/testenv"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: binfmt amd64|arm64")
		os.Exit(2)
	}
	c := &testenv.Console{Name: "binfmt"}
	defer c.Close()
	testenv.EnsureBinfmt(c, os.Args[1])
	if c.Failed() {
		os.Exit(1)
	}
}
