package gondolin

import (
	"os"
	"testing"
)

// skipOrFail skips a test whose host prerequisite is missing, except under
// CI=true, where every test must run: there it fails.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true: "+format, args...)
	}
	t.Skipf(format, args...)
}
