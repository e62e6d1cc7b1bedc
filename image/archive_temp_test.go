package image

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/docker2vm/docker2vm/internal/lock"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
)

// TestArchiveTempsReclaimed: a compressed archive is decompressed into a
// temporary file under <cache>/tmp that its run holds locked; the next run
// removes those of killed runs (unlocked) and leaves a live one's alone.
func TestArchiveTempsReclaimed(t *testing.T) {
	layout := imagetest.WriteLayout(t, filepath.Join(t.TempDir(), "layout"), imagetest.LayoutEntry{Image: imagetest.New(t, imagetest.Spec{OCI: true})})
	archive := imagetest.WriteOCIArchive(t, layout, filepath.Join(t.TempDir(), "a.tar.gz"), true)
	cache := t.TempDir()
	tmp := filepath.Join(cache, "tmp")
	os.MkdirAll(tmp, 0o755)
	dead := filepath.Join(tmp, "docker2vm-archive-dead.tar")
	os.WriteFile(dead, make([]byte, 4096), 0o644)
	live := filepath.Join(tmp, "docker2vm-archive-live.tar")
	os.WriteFile(live, nil, 0o644)
	lf, err := os.Open(live)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	if ok, err := lock.TryFile(lf); err != nil || !ok {
		t.Fatalf("locking the live file: %v %v", ok, err)
	}

	img, err := Resolve(context.Background(), Source{Kind: KindOCIArchive, Ref: archive}, Options{Platform: amd64, CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("a killed run's decompressed archive is still there: %v", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("a live run's decompressed archive was removed: %v", err)
	}
	temps := filepath.Join(tmp, "docker2vm-archive-*.tar")
	ours, _ := filepath.Glob(temps)
	if len(ours) != 2 { // live + this run's own
		t.Errorf("temporary files while open: %v", ours)
	}
	// Another run now must not take this run's file for a dead one's.
	img2, err := Resolve(context.Background(), Source{Kind: KindOCIArchive, Ref: archive}, Options{Platform: amd64, CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := filepath.Glob(temps); len(got) != 3 {
		t.Errorf("a second run removed an open run's file: %v", got)
	}
	img.Close()
	img2.Close()
	if got, _ := filepath.Glob(temps); len(got) != 1 {
		t.Errorf("after Close: %v, want only the live one", got)
	}
}
