package image

import (
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// SourceKind says where an image comes from.
type SourceKind string

const (
	// KindRegistry: Ref is an image reference (REGISTRY/REPO[:TAG][@DIGEST]).
	KindRegistry SourceKind = "image"
	// KindOCILayout: Ref is a directory holding an OCI image layout,
	// optionally followed by ":REFNAME" (see SplitPathRef).
	KindOCILayout SourceKind = "oci-layout"
	// KindOCIArchive: Ref is a tar file (optionally gzip- or
	// zstd-compressed) holding an OCI image layout or a `docker save`
	// archive, optionally followed by ":REFNAME" (see SplitPathRef).
	KindOCIArchive SourceKind = "oci-tar"
)

// Source names the image to convert, as the user gave it.
type Source struct {
	Kind SourceKind
	// Ref is the image reference for KindRegistry, and PATH[:REFNAME] for
	// layouts and archives. Options.RefName, when set, selects the image
	// inside a layout or archive instead of a ":REFNAME" suffix.
	Ref string
}

func (s Source) String() string { return string(s.Kind) + " " + s.Ref }

// SplitPathRef splits a --oci-layout/--oci-tar argument into a path and an
// optional reference name ("PATH:REF"). Paths and refs may both contain ':'
// (e.g. "dir:v1", "img.tar:example.com/app:1.0"), so: when s names an
// existing file or directory it is the path, whole; otherwise the first ':'
// whose prefix is an existing regular file or a directory holding index.json
// splits it; otherwise s is returned whole as the path (Resolve then reports
// it missing).
func SplitPathRef(s string) (path, ref string) {
	if _, err := os.Stat(s); err == nil {
		return s, ""
	}
	for i := 0; i < len(s); i++ {
		if s[i] != ':' || i == 0 || i == len(s)-1 {
			continue
		}
		p := s[:i]
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		if fi.Mode().IsRegular() {
			return p, s[i+1:]
		}
		if fi.IsDir() {
			if _, err := os.Stat(filepath.Join(p, "index.json")); err == nil {
				return p, s[i+1:]
			}
		}
	}
	return s, ""
}

// registryHost returns the host part of a registry name (host[:port], with
// brackets around IPv6 addresses), lower-cased.
func registryHost(reg string) string {
	reg = strings.ToLower(reg)
	if h, _, err := net.SplitHostPort(reg); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(reg, "["), "]")
}

// IsLoopbackRegistry reports whether a registry (host[:port]) is on this
// machine: localhost, *.localhost, 127.0.0.0/8 or ::1, any port. Such
// registries are reached over plain HTTP when HTTPS fails.
func IsLoopbackRegistry(reg string) bool {
	h := registryHost(reg)
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// isInsecure reports whether reg is named in list. An entry with a port
// matches that host:port only; an entry without one matches the host on any
// port. Scheme prefixes and trailing slashes in entries are ignored.
func isInsecure(reg string, list []string) bool {
	reg = strings.ToLower(reg)
	host := registryHost(reg)
	for _, e := range list {
		e = strings.ToLower(strings.TrimSpace(e))
		e = strings.TrimPrefix(strings.TrimPrefix(e, "http://"), "https://")
		e = strings.TrimSuffix(e, "/")
		if e == "" {
			continue
		}
		if e == reg {
			return true
		}
		if _, _, err := net.SplitHostPort(e); err != nil && registryHost(e) == host {
			return true
		}
	}
	return false
}

// ParseReference parses an image reference. Registries on loopback and
// those named in insecure are marked insecure: go-containerregistry then
// tries HTTPS and plain HTTP and uses whichever answers.
func ParseReference(s string, insecure []string) (name.Reference, error) {
	s = strings.TrimSpace(s)
	ref, err := name.ParseReference(s, name.WeakValidation)
	if err != nil {
		return nil, newError(err, []string{
			"Use the form [REGISTRY[:PORT]/]REPOSITORY[:TAG|@sha256:DIGEST], e.g. docker.io/library/alpine:3.20 or 127.0.0.1:5000/app:latest.",
		}, "invalid image reference %q", s)
	}
	reg := ref.Context().RegistryStr()
	if IsLoopbackRegistry(reg) || isInsecure(reg, insecure) {
		ref, err = name.ParseReference(s, name.WeakValidation, name.Insecure)
		if err != nil {
			return nil, newError(err, nil, "invalid image reference %q", s)
		}
	}
	return ref, nil
}
