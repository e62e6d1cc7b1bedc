// Command oci2gondolin converts an OCI or Docker image into a Gondolin guest.
package main

import (
	"os"

	"github.com/docker2vm/docker2vm/internal/app"
)

func main() {
	os.Exit(app.OCI2Gondolin().Main(os.Args[1:], os.Stdout, os.Stderr))
}
