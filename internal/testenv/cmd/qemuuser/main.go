// Command qemuuser prints the path of the qemu-user emulator that runs
// linux/ARCH programs on this host, chosen as the tests choose it
// (qemuuser.Path: one recent enough not to hang forking programs), and
// with -binfmt also makes the kernel run them through it (binfmt_misc, as
// qemuuser.EnsureBinfmt does; needs root):
//
//	go run ./internal/testenv/cmd/qemuuser [-binfmt] arm64
//
// scripts/test-arm64.sh runs the arm64 unit tests with it, and `make
// test-arm64` registers it first for the tests that start their own binary
// again; install-deps.sh asks it whether it must install one.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/docker2vm/docker2vm/internal/testenv"
	"github.com/docker2vm/docker2vm/internal/testenv/qemuuser"
)

func main() {
	binfmt := flag.Bool("binfmt", false, "register the emulator with binfmt_misc too (needs root)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: qemuuser [-binfmt] amd64|arm64")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	arch := flag.Arg(0)
	c := &testenv.Console{Name: "qemuuser"}
	defer c.Close()
	path := qemuuser.Path(c, arch)
	if *binfmt {
		qemuuser.EnsureBinfmt(c, arch)
		if c.Failed() {
			c.Close()
			os.Exit(1)
		}
	}
	fmt.Println(path)
}
