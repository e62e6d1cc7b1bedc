// Package arch names the two architectures docker2vm converts for, under
// each of the names the tools around it use: OCI and Go (amd64, arm64),
// Gondolin and the kernel (x86_64, aarch64), Node.js and npm (x64, arm64).
// It is the one place that knows the aliases.
package arch

import "strings"

// Arch is one architecture by its names.
type Arch struct {
	OCI      string // amd64, arm64: OCI platforms, GOARCH
	Gondolin string // x86_64, aarch64: Gondolin's manifest.json, uname -m
	Node     string // x64, arm64: process.arch, npm's cpu field
}

var (
	AMD64 = Arch{OCI: "amd64", Gondolin: "x86_64", Node: "x64"}
	ARM64 = Arch{OCI: "arm64", Gondolin: "aarch64", Node: "arm64"}
)

// Parse reads any name of either architecture, case-insensitive: amd64,
// x86_64, x86-64, x64; arm64, aarch64.
func Parse(s string) (Arch, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "amd64", "x86_64", "x86-64", "x64":
		return AMD64, true
	case "arm64", "aarch64":
		return ARM64, true
	}
	return Arch{}, false
}

// Pick is amd64's or arm64's value for the architecture named (any name
// Parse reads); false for another.
func Pick[T any](name string, amd64, arm64 T) (T, bool) {
	switch a, _ := Parse(name); a {
	case AMD64:
		return amd64, true
	case ARM64:
		return arm64, true
	}
	var zero T
	return zero, false
}
