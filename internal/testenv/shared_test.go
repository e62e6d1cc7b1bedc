package testenv

import (
	"strings"
	"testing"
)

// TestDebianMirror: apt's Debian mirror, or the default one, is an HTTP URL.
func TestDebianMirror(t *testing.T) {
	if m := DebianMirror(); !strings.HasPrefix(m, "http") {
		t.Fatalf("DebianMirror = %q", m)
	}
}
