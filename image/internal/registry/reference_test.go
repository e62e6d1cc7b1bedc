package registry

import (
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/docker2vm/docker2vm/hint"
)

func TestRegistryReferences(t *testing.T) {
	tests := []struct {
		ref      string
		insecure []string
		scheme   string
		loopback bool
	}{
		{"localhost:5000/app", nil, "http", true},
		{"localhost/app:1", nil, "http", true},
		{"127.0.0.1:5000/app", nil, "http", true},
		{"127.0.0.2:5000/app", nil, "http", true},
		{"[::1]:5000/app:tag", nil, "http", true},
		{"registry.localhost:8080/a/b", nil, "http", true},
		{"docker.io/library/alpine", nil, "https", false},
		{"alpine:3.20", nil, "https", false},
		{"ghcr.io/o/r@sha256:" + strings.Repeat("a", 64), nil, "https", false},
		{"reg.example:5000/app", []string{"reg.example:5000"}, "http", false},
		{"reg.example:5000/app", []string{"reg.example"}, "http", false},
		{"reg.example:5000/app", []string{"reg.example:6000"}, "https", false},
		{"reg.example/app", []string{"http://REG.example/"}, "http", false},
		{"other.example/app", []string{"reg.example"}, "https", false},
	}
	for _, tc := range tests {
		t.Run(tc.ref, func(t *testing.T) {
			ref, err := ParseReference(tc.ref, tc.insecure)
			if err != nil {
				t.Fatal(err)
			}
			reg := ref.Context().Registry
			if got := reg.Scheme(); got != tc.scheme {
				t.Errorf("scheme = %s, want %s", got, tc.scheme)
			}
			if got := IsLoopback(reg.RegistryStr()); got != tc.loopback {
				t.Errorf("IsLoopback(%s) = %v, want %v", reg.RegistryStr(), got, tc.loopback)
			}
		})
	}
	if _, err := ParseReference("UPPER/case::bad", nil); err == nil {
		t.Error("want error for an invalid reference")
	} else if len(hint.Of(err)) == 0 {
		t.Errorf("invalid reference error has no hints: %v", err)
	}
	ref, _ := ParseReference("[::1]:5000/app:tag", nil)
	if _, ok := ref.(name.Tag); !ok || ref.Context().RepositoryStr() != "app" {
		t.Errorf("[::1]:5000/app:tag parsed as %#v", ref)
	}
}
