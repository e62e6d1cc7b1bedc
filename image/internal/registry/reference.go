package registry

import (
	"net"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/docker2vm/docker2vm/hint"
)

// registryHost returns the host part of a registry name (host[:port], with
// brackets around IPv6 addresses), lower-cased.
func registryHost(reg string) string {
	reg = strings.ToLower(reg)
	if h, _, err := net.SplitHostPort(reg); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(reg, "["), "]")
}

// IsLoopback reports whether a registry (host[:port]) is on this
// machine: localhost, *.localhost, 127.0.0.0/8 or ::1, any port. Such
// registries are reached over plain HTTP when HTTPS fails.
func IsLoopback(reg string) bool {
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
		return nil, hint.New(err, []string{
			"Use the form [REGISTRY[:PORT]/]REPOSITORY[:TAG|@sha256:DIGEST], e.g. docker.io/library/alpine:3.20 or 127.0.0.1:5000/app:latest.",
		}, "invalid image reference %q", s)
	}
	reg := ref.Context().RegistryStr()
	if IsLoopback(reg) || isInsecure(reg, insecure) {
		ref, err = name.ParseReference(s, name.WeakValidation, name.Insecure)
		if err != nil {
			return nil, hint.New(err, nil, "invalid image reference %q", s)
		}
	}
	return ref, nil
}
