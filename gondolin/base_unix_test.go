//go:build unix

package gondolin

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker2vm/docker2vm/internal/diskio/diskiotest"
)

// TestBaseAssetNotRegular: a FIFO, socket, device or directory at a base
// bundle's kernel, initramfs, rootfs or manifest.json is refused at once,
// and the error names what it is.
func TestBaseAssetNotRegular(t *testing.T) {
	for _, name := range []string{KernelName, InitramfsName, RootfsName, ManifestName} {
		for _, k := range diskiotest.Kinds {
			t.Run(name+"/"+k.Kind, func(t *testing.T) {
				dir := filepath.Join(diskiotest.ShortDir(t), "b")
				makeBaseDir(t, dir, ArchX86_64, true)
				p := filepath.Join(dir, name)
				os.Remove(p)
				k.Make(t, p)
				done := make(chan error, 1)
				go func() {
					_, err := FindBase(context.Background(), BaseOptions{Dir: dir, Platform: "linux/amd64"})
					done <- err
				}()
				select {
				case err := <-done:
					if err == nil || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "not a regular file") {
						t.Fatalf("FindBase: %v", err)
					}
				case <-time.After(10 * time.Second):
					if w, err := os.OpenFile(p, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
						w.Close()
					}
					t.Fatalf("FindBase waits on a %s at %s", k.Kind, name)
				}
			})
		}
	}
}
