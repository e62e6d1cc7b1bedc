package convert

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker2vm/docker2vm/internal/require"
)

// assertInPlaceClean checks that out, published in place, holds an
// output and none of a run's own names, and that nothing was left beside
// it.
func assertInPlaceClean(t *testing.T, out string) {
	t.Helper()
	ents, _ := os.ReadDir(out)
	for _, e := range ents {
		if bookkeeping(e.Name()) {
			t.Errorf("left inside the output: %s", e.Name())
		}
	}
	if _, err := os.Stat(filepath.Join(out, metaFile)); err != nil {
		t.Errorf("no output: %v", err)
	}
	assertNoLitter(t, out)
}

// TestOutMountPoint: an --out that is a mount point (a container's
// volume, an empty tmpfs) cannot be swapped: the run stages inside it and
// moves the output in, replaces an earlier output there, and finishes or
// undoes what a run killed at each step of that left.
func TestOutMountPoint(t *testing.T) {
	require.Root(t, "to mount a tmpfs")
	ctx := context.Background()
	src := layoutSource(t, sampleImage(t))
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := mountTmpfs(mnt); err != nil {
		require.Missing(t, "mounting a tmpfs: %v", err)
	}
	t.Cleanup(func() { unmount(mnt) })
	st, _ := os.Stat(mnt)
	if !mountPoint(mnt, st) {
		t.Fatal("mountPoint does not see the tmpfs")
	}

	var progress strings.Builder
	o := options(src, mnt)
	o.Progress = &progress
	if _, err := Run(ctx, o); err != nil {
		t.Fatalf("into an empty mount point: %v", err)
	}
	if !strings.Contains(progress.String(), "is a mount point") {
		t.Errorf("progress does not say how it publishes: %q", progress.String())
	}
	assertInPlaceClean(t, mnt)
	want, _ := os.ReadFile(filepath.Join(mnt, RootfsFile))
	if _, err := Run(ctx, options(src, mnt)); err != nil {
		t.Fatalf("over an earlier output in a mount point: %v", err)
	}
	assertInPlaceClean(t, mnt)

	for _, tc := range []struct {
		name  string
		crash func(t *testing.T, output string)
	}{
		{"killed while moving the new output in", func(t *testing.T, output string) {
			copyDir(t, output, filepath.Join(mnt, inPlaceOld))
			os.Remove(filepath.Join(mnt, metaFile))
		}},
		{"killed with the new output in, the old not removed", func(t *testing.T, output string) {
			copyDir(t, output, filepath.Join(mnt, inPlaceOld))
		}},
		{"killed while removing the old output", func(t *testing.T, output string) {
			copyDir(t, output, filepath.Join(mnt, inPlaceDone))
		}},
		{"killed while staging", func(t *testing.T, output string) {
			copyDir(t, output, filepath.Join(mnt, inPlaceTmp+"123"))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			output := t.TempDir() // a copy of the output, to plant
			copyDir(t, mnt, output)
			tc.crash(t, output)
			if _, err := Run(ctx, options(src, mnt)); err != nil {
				t.Fatalf("the run after the crash: %v", err)
			}
			if got, _ := os.ReadFile(filepath.Join(mnt, RootfsFile)); string(got) != string(want) {
				t.Error("the output differs")
			}
			assertInPlaceClean(t, mnt)
		})
	}

	// Other files in the mount point: refused, and --force does not take
	// a mount point either.
	os.WriteFile(filepath.Join(mnt, "notes.txt"), []byte("mine"), 0o644)
	for _, force := range []bool{false, true} {
		o := options(src, mnt)
		o.Force = force
		if _, err := Run(ctx, o); err == nil {
			t.Errorf("force=%v: a mount point with other files was replaced", force)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(mnt, "notes.txt")); string(b) != "mine" {
		t.Error("the user's file changed")
	}
}

// TestRecoverInPlace: what a run killed while publishing into a mount
// point leaves is undone (the previous output back, nothing of the new
// one's but what only an output has) or finished, on any directory.
func TestRecoverInPlace(t *testing.T) {
	out := t.TempDir()
	write := func(dir, name, data string) {
		t.Helper()
		os.MkdirAll(dir, 0o755)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := filepath.Join(out, inPlaceOld)
	// The previous output moved aside, the new one's rootfs moved in.
	write(old, metaFile, `{"files":["meta.json","rootfs.ext4"]}`)
	write(old, RootfsFile, "previous")
	write(out, RootfsFile, "new")
	if err := os.MkdirAll(filepath.Join(out, inPlaceTmp+"x", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	var said []string
	if err := recoverInPlace(out, func(f string, a ...any) { said = append(said, f) }); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(out, RootfsFile)); string(b) != "previous" {
		t.Errorf("rootfs.ext4 %q, want the previous output's", b)
	}
	if _, err := os.Stat(filepath.Join(out, metaFile)); err != nil {
		t.Error("the previous meta.json is not back")
	}
	ents, _ := os.ReadDir(out)
	if len(ents) != 2 || len(said) != 1 {
		t.Errorf("entries %v, said %q", ents, said)
	}

	// The new output all in: the old one is dropped.
	write(old, RootfsFile, "previous")
	write(out, RootfsFile, "new")
	if err := recoverInPlace(out, func(string, ...any) {}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(out, RootfsFile)); string(b) != "new" {
		t.Errorf("rootfs.ext4 %q, want the new output's", b)
	}
	if _, err := os.Lstat(old); !os.IsNotExist(err) {
		t.Errorf("%s is still there", inPlaceOld)
	}
}

// TestInPlaceNamesElsewhere: the names of a run writing inside a mount
// point mean nothing in another directory: one that holds them and other
// files is still refused.
func TestInPlaceNamesElsewhere(t *testing.T) {
	out := t.TempDir()
	os.MkdirAll(filepath.Join(out, inPlaceOld), 0o755)
	os.WriteFile(filepath.Join(out, "notes.txt"), []byte("mine"), 0o644)
	if err := checkReplaceable(out, false, nil); err == nil || !strings.Contains(err.Error(), "does not hold a docker2vm output") {
		t.Fatalf("checkReplaceable: %v", err)
	}
}

// TestPublishInPlace: the previous output's entries leave, the new ones
// (a platform directory included) arrive, and nothing else in the
// directory is touched.
func TestPublishInPlace(t *testing.T) {
	out := t.TempDir()
	os.WriteFile(filepath.Join(out, metaFile), []byte(`{"files":["meta.json","rootfs.ext4","old.txt"]}`), 0o644)
	os.WriteFile(filepath.Join(out, RootfsFile), []byte("previous"), 0o644)
	os.WriteFile(filepath.Join(out, "old.txt"), []byte("previous"), 0o644)
	dir, err := os.MkdirTemp(out, inPlaceTmp)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, metaFile), []byte(`{"files":["meta.json","rootfs.ext4"]}`), 0o644)
	os.WriteFile(filepath.Join(dir, RootfsFile), []byte("new"), 0o644)
	s := &staging{out: out, dir: dir, inPlace: true}
	if err := s.publishInPlace(); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(out)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "meta.json rootfs.ext4" {
		t.Errorf("entries %q", names)
	}
	if b, _ := os.ReadFile(filepath.Join(out, RootfsFile)); string(b) != "new" {
		t.Errorf("rootfs.ext4 %q", b)
	}
}
