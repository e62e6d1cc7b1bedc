//go:build linux

package debian

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/docker2vm/docker2vm/internal/require"
)

// An interrupted debootstrap leaves proc mounted in the target: cleaning
// up must detach it, not recurse into it.
func TestRemoveAllUnmounts(t *testing.T) {
	require.Root(t, "to mount")
	dir := filepath.Join(t.TempDir(), "debian-minbase-bookworm.tmp-1")
	mp := filepath.Join(dir, "rootfs", "proc")
	if err := os.MkdirAll(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("proc", mp, "proc", 0, ""); err != nil {
		t.Fatalf("mounting proc on %s: %v", mp, err)
	}
	if err := removeAll(dir); err != nil {
		syscall.Unmount(mp, syscall.MNT_DETACH)
		t.Fatal(err)
	}
	if _, err := os.Lstat(dir); !os.IsNotExist(err) {
		t.Fatalf("%s still there: %v", dir, err)
	}
	if left, _ := mountsUnder(filepath.Dir(dir)); len(left) > 0 {
		t.Fatalf("mounts left: %v", left)
	}
}
