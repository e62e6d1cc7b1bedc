// Command dockerfile2gondolin builds a Dockerfile with BuildKit and converts
// the result into a Gondolin guest.
package main

import (
	"os"

	"github.com/docker2vm/docker2vm/internal/app"
)

func main() {
	os.Exit(app.Dockerfile2Gondolin().Main(os.Args[1:], os.Stdout, os.Stderr))
}
