// Command hello is the only file of the shell-less test image: a static
// binary that reports its arguments, working directory, user and one
// environment variable, so a boot test can see how it was started.
package main

import (
	"fmt"
	"os"
	"strings"
)

func main() {
	wd, _ := os.Getwd()
	groups, _ := os.Getgroups()
	fmt.Printf("hello from a shell-less image: args=%s cwd=%s uid=%d greeting=%s gid=%d groups=%v home=%s\n",
		strings.Join(os.Args[1:], ","), wd, os.Getuid(), os.Getenv("GREETING"), os.Getgid(), groups, os.Getenv("HOME"))
}
