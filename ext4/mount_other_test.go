//go:build !linux

package ext4

import (
	"testing"

	"github.com/docker2vm/docker2vm/fstree"
)

// Loop mounts (the kernel's ext4 driver as the oracle) need Linux.

func mountImage(t testing.TB, img string, rw bool) string {
	t.Skip("loop-mounting an ext4 image needs Linux")
	return ""
}

func umount(t testing.TB, dir string) {}

func compareMounted(t *testing.T, dir string, tr *fstree.Tree, hs *hashingStore) {}
