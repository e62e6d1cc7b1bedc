//go:build unix

package convert

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker2vm/docker2vm/internal/diskio/diskiotest"
)

// TestOutMetaNotRegular: a FIFO, socket, device or directory where an
// --out directory's meta.json would be makes it a directory of other
// files (refused without --force), and the check never waits on it.
func TestOutMetaNotRegular(t *testing.T) {
	for _, k := range diskiotest.Kinds {
		t.Run(k.Kind, func(t *testing.T) {
			out := diskiotest.ShortDir(t)
			os.WriteFile(filepath.Join(out, RootfsFile), []byte("x"), 0o644)
			meta := filepath.Join(out, metaFile)
			k.Make(t, meta)
			done := make(chan error, 1)
			go func() { done <- checkReplaceable(out, false, nil) }()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), "does not hold a docker2vm output") {
					t.Fatalf("checkReplaceable: %v", err)
				}
			case <-time.After(10 * time.Second):
				if w, err := os.OpenFile(meta, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
					w.Close()
				}
				t.Fatalf("checking --out waits on a %s at meta.json", k.Kind)
			}
		})
	}
}
