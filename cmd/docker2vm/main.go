// Command docker2vm does what is not a conversion: caches, shell
// completion, the version.
package main

import (
	"os"

	"github.com/docker2vm/docker2vm/internal/app"
)

func main() {
	os.Exit(app.Docker2VM().Main(os.Args[1:], os.Stdout, os.Stderr))
}
