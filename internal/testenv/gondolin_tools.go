package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
)

// gdInCI reports whether missing tools must fail tests instead of skipping
// them (CI=true, as set by .ci/run and most CI systems).
func gdInCI() bool {
	v := os.Getenv("CI")
	return v == "true" || v == "1"
}

// gdMissing skips the test, or fails it under CI, because a prerequisite
// is missing.
func gdMissing(t TB, format string, args ...any) {
	t.Helper()
	if gdInCI() {
		t.Fatalf("CI=true and a test prerequisite is missing: "+format, args...)
	}
	t.Skipf("skipping: "+format, args...)
}

// gdLookTool finds name on PATH or in the sbin directories a non-root PATH
// often lacks (depmod, mke2fs live there on Debian).
func gdLookTool(name string) (string, bool) {
	if p, err := exec.LookPath(name); err == nil {
		return p, true
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, true
		}
	}
	if name == "go" {
		p := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(p); err == nil {
			return p, true
		}
	}
	return "", false
}

// gdRequireTools returns the paths of the named tools, skipping the test
// (failing it under CI=true) when one is missing. pkgs names the Debian
// packages to install, for the message.
func gdRequireTools(t TB, pkgs string, names ...string) map[string]string {
	t.Helper()
	paths := map[string]string{}
	var missing []string
	for _, n := range names {
		if p, ok := gdLookTool(n); ok {
			paths[n] = p
		} else {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		gdMissing(t, "tools %v not found (apt-get install %s)", missing, pkgs)
	}
	return paths
}
