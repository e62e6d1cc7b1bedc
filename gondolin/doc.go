// Package gondolin holds Gondolin's bundles and where they live: finding a
// base bundle (the kernel, initramfs and runtime glue we reuse), the asset
// manifest (manifest.json, Gondolin 0.12 schema) and its build id,
// importing an asset directory into Gondolin's image store, and publishing
// guests into an image registry. What is added to an image's tree to make
// it a guest is package gondolin/guest's.
//
// The rules follow docs/gondolin-contract.md and were checked against the
// JavaScript of @earendil-works/gondolin 0.12.0 (read only).
package gondolin

import (
	"strings"

	"github.com/docker2vm/docker2vm/internal/arch"
)

// Architecture names as Gondolin writes them in manifest.json.
const (
	ArchX86_64  = "x86_64"
	ArchAarch64 = "aarch64"
)

// NormalizeArch maps any name of the two architectures (internal/arch:
// x86_64, amd64, x86-64, x64, aarch64, arm64, case-insensitive) and OCI
// platform strings ("linux/amd64", "linux/arm64/v8") to Gondolin's,
// x86_64 or aarch64; "" if unknown.
func NormalizeArch(s string) string {
	s = strings.TrimSpace(s)
	if strings.IndexByte(s, '/') >= 0 {
		// OS/ARCH[/VARIANT]
		parts := strings.Split(strings.ToLower(s), "/")
		if len(parts) < 2 || parts[0] != "linux" {
			return ""
		}
		s = parts[1]
	}
	a, ok := arch.Parse(s)
	if !ok {
		return ""
	}
	return a.Gondolin
}
