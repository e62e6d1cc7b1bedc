package testenv

import (
	"context"
	"os"
	"path/filepath"

	"github.com/docker2vm/docker2vm/internal/lock"
)

// CacheDir is where fixtures are cached across test runs:
// $DOCKER2VM_TEST_CACHE, else $XDG_CACHE_HOME/docker2vm-test, else
// ~/.cache/docker2vm-test, else $TMPDIR/docker2vm-testenv.
func CacheDir() string {
	if d := os.Getenv("DOCKER2VM_TEST_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "docker2vm-test")
	}
	if h, err := os.UserHomeDir(); err == nil && h != "" && h != "/" {
		return filepath.Join(h, ".cache", "docker2vm-test")
	}
	return filepath.Join(os.TempDir(), "docker2vm-testenv")
}

// Lock takes an exclusive flock on the file p (created if needed), so
// that test binaries of different packages running in parallel do not
// build the same fixture twice.
func Lock(p string) (unlock func(), err error) {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, err
	}
	l, err := lock.Acquire(context.Background(), p, nil)
	if err != nil {
		return nil, err
	}
	return func() { _ = l.Unlock() }, nil
}
