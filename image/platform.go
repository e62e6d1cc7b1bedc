package image

import (
	"fmt"
	"runtime"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/internal/arch"
)

// Platform is the OS/architecture/variant an image is built for.
type Platform = v1.Platform

// supportedPlatforms are the platforms a conversion can target.
var supportedPlatforms = []string{"linux/amd64", "linux/arm64"}

// ParsePlatform parses a --platform value: "linux/amd64", "linux/arm64",
// "amd64", "arm64", "linux/arm64/v8" (also "x86_64", "aarch64"). Any other
// OS or architecture is rejected with the supported ones listed.
func ParsePlatform(s string) (Platform, error) {
	orig := s
	s = strings.ToLower(strings.TrimSpace(s))
	parts := strings.Split(s, "/")
	if len(parts) == 1 {
		parts = []string{"linux", parts[0]}
	}
	bad := func(why string) (Platform, error) {
		return Platform{}, hint.New(nil, []string{
			"Pass --platform linux/amd64 or --platform linux/arm64 (amd64 and arm64 are accepted too).",
		}, "unsupported platform %q: %s; supported: %s", orig, why, strings.Join(supportedPlatforms, ", "))
	}
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return bad("expected OS/ARCH[/VARIANT]")
	}
	if parts[0] != "linux" {
		return bad(fmt.Sprintf("OS %q is not supported, only linux", parts[0]))
	}
	p := Platform{OS: "linux"}
	a, ok := arch.Parse(parts[1])
	if !ok {
		return bad(fmt.Sprintf("architecture %q is not supported", parts[1]))
	}
	p.Architecture = a.OCI
	if len(parts) == 3 {
		v := parts[2]
		switch {
		case p.Architecture == "arm64" && v == "v8":
			p.Variant = "v8"
		case p.Architecture == "amd64" && (v == "v1" || v == "v2" || v == "v3" || v == "v4"):
			p.Variant = v
		default:
			return bad(fmt.Sprintf("variant %q is not valid for %s", v, p.Architecture))
		}
	}
	return p, nil
}

// ParsePlatforms parses a comma-separated --platform list
// ("linux/amd64,linux/arm64"): each entry as ParsePlatform does, in the
// order given; an entry given twice (also as another spelling of the same
// platform: "arm64,linux/arm64/v8") is an error.
func ParsePlatforms(s string) ([]Platform, error) {
	var out []Platform
	seen := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		p, err := ParsePlatform(part)
		if err != nil {
			return nil, err
		}
		key := p.OS + "/" + p.Architecture
		if prev, dup := seen[key]; dup {
			return nil, hint.New(nil, []string{"List each platform once, e.g. --platform linux/amd64,linux/arm64."},
				"platform %s is given twice in %q (as %q and %q)", key, s, prev, strings.TrimSpace(part))
		}
		seen[key] = strings.TrimSpace(part)
		out = append(out, p)
	}
	return out, nil
}

// HostPlatform returns linux/<GOARCH> of the running program. On a host that
// is neither amd64 nor arm64 it returns linux/<GOARCH> all the same, which
// ParsePlatform-style validation (and Resolve) will reject with a clear
// message.
func HostPlatform() Platform {
	return Platform{OS: "linux", Architecture: runtime.GOARCH}
}

func validatePlatform(p Platform) (Platform, error) {
	if p.OS == "" && p.Architecture == "" {
		p = HostPlatform()
	}
	if p.OS == "" {
		p.OS = "linux"
	}
	return ParsePlatform(platformString(p))
}

func platformString(p Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// normVariant treats arm64 "v8" and "" as the same variant.
func normVariant(arch, variant string) string {
	if arch == "arm64" && variant == "v8" {
		return ""
	}
	return variant
}

// platformScore says how well have matches want: 0 = no match, higher is
// better. OS and architecture must be equal. When want names a variant the
// variant must be equal (arm64: v8 and none are the same); when it does not,
// an image without a variant is preferred over one with.
func platformScore(have, want Platform) int {
	if have.OS != want.OS || have.Architecture != want.Architecture {
		return 0
	}
	hv, wv := normVariant(have.Architecture, have.Variant), normVariant(want.Architecture, want.Variant)
	switch {
	case hv == wv:
		return 3
	case wv == "":
		return 1
	default:
		return 0
	}
}

const (
	annotationRefName     = "org.opencontainers.image.ref.name"
	annotationImageName   = "io.containerd.image.name"
	annotationRefType     = "vnd.docker.reference.type"
	attestationRefType    = "attestation-manifest"
	maxIndexDepth         = 4
	maxIndexEntries       = 1024
	maxUnknownPlatformTry = 8
)

// isAttestation reports index entries that are not runnable images: BuildKit
// attestation manifests (platform unknown/unknown, or annotated as such).
func isAttestation(d v1.Descriptor) bool {
	if d.Annotations[annotationRefType] == attestationRefType {
		return true
	}
	return d.Platform != nil && d.Platform.OS == "unknown" && d.Platform.Architecture == "unknown"
}

// platformList renders the distinct platforms, sorted.
func platformList(ps []Platform) string {
	seen := map[string]bool{}
	var out []string
	for _, p := range ps {
		s := platformString(p)
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

// convertible reports whether docker2vm converts images of p.
func convertible(p Platform) bool {
	return p.OS == "linux" && (p.Architecture == "amd64" || p.Architecture == "arm64")
}

func platformMissError(want Platform, offered []Platform) error {
	hints := []string{}
	some := false
	for _, p := range offered {
		if convertible(p) {
			some = true
			if p.Architecture != want.Architecture {
				hints = append(hints, fmt.Sprintf("Pass --platform linux/%s to convert the variant the image has.", p.Architecture))
				break
			}
		}
	}
	hints = append(hints, fmt.Sprintf("Choose an image that is published for %s.", platformString(want)))
	if !some {
		return hint.New(nil, hints, "the image has no %s variant; it offers %s, and none of them can be converted (docker2vm converts %s images)",
			platformString(want), platformList(offered), strings.Join(supportedPlatforms, " and "))
	}
	return hint.New(nil, hints, "the image has no %s variant; it offers: %s", platformString(want), platformList(offered))
}

func platformMismatchError(have, want Platform) error {
	if !convertible(have) {
		return hint.New(nil, []string{fmt.Sprintf("Choose an image that is published for %s.", platformString(want))},
			"image is %s, which cannot be converted (docker2vm converts %s images)", platformString(have), strings.Join(supportedPlatforms, " and "))
	}
	return hint.New(nil, []string{
		fmt.Sprintf("pass --platform %s or choose another image", platformString(Platform{OS: have.OS, Architecture: have.Architecture})),
	}, "image is %s but --platform is %s; pass --platform %s or choose another image",
		platformString(have), platformString(want), platformString(Platform{OS: have.OS, Architecture: have.Architecture}))
}
