package testenv

import "strings"

// WantErr fails t unless err is an error whose message holds every part.
func WantErr(t TB, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want an error containing %q, got nil", parts)
		return
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not contain %q", err, p)
			return
		}
	}
}
