// Command qemuuser prints the path of the qemu-user emulator that runs
// linux/ARCH programs on this host, chosen as the tests choose it
// (testenv.QemuUser: one recent enough not to hang forking programs):
//
//	go run ./internal/testenv/cmd/qemuuser arm64
//
// scripts/test-arm64.sh runs the arm64 unit tests with it; install-deps.sh
// asks it whether it must install one.
package main

import (
	"fmt"
	"os"

	"github.com/docker2vm/docker2vm/internal/testenv"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: qemuuser amd64|arm64")
		os.Exit(2)
	}
	c := &testenv.Console{Name: "qemuuser"}
	defer c.Close()
	fmt.Println(testenv.QemuUser(c, os.Args[1]))
}
