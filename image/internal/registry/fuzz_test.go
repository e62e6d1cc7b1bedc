package registry

import (
	"testing"
	"time"
)

// FuzzRegistryHeaders feeds arbitrary Content-Range and Retry-After values,
// which a registry (or anything on the way) chooses: what parses must be
// a range a blob can have, and a wait that is not negative.
func FuzzRegistryHeaders(f *testing.F) {
	for _, s := range []string{"bytes 0-99/100", "bytes 5-9/*", " bytes 1-1/2 ", "bytes 9-5/10", "bytes -1-5/10",
		"bytes 0-9223372036854775807/*", "120", "Wed, 21 Oct 2015 07:28:00 GMT", "-5", ""} {
		f.Add(s)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		if start, end, total, ok := parseContentRange(v); ok {
			if start < 0 || end < start || (total != -1 && total <= end) {
				t.Fatalf("parseContentRange(%q) = %d, %d, %d", v, start, end, total)
			}
		}
		if d, ok := parseRetryAfter(v, now); ok && d < 0 {
			t.Fatalf("parseRetryAfter(%q) = %s", v, d)
		}
	})
}
