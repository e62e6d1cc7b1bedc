package convert

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/docker2vm/docker2vm/image"
	"github.com/docker2vm/docker2vm/internal/diskio"
	"github.com/docker2vm/docker2vm/internal/lock"
	"github.com/docker2vm/docker2vm/internal/require"
)

// TestRunRecoversInterruptedPublication puts the output directory in each
// state a run killed while publishing can leave, and checks that the next
// run finds the previous output, publishes its own and leaves nothing
// behind.
func TestRunRecoversInterruptedPublication(t *testing.T) {
	ctx := context.Background()
	src := layoutSource(t, sampleImage(t))
	for _, tc := range []struct {
		name string
		// crash turns a published output into what a killed run leaves.
		crash func(t *testing.T, out string)
	}{
		{"moved aside, not replaced", func(t *testing.T, out string) {
			_, _, old := outNames(out)
			if err := os.Rename(out, old); err != nil {
				t.Fatal(err)
			}
		}},
		{"replaced, old not removed", func(t *testing.T, out string) {
			_, _, old := outNames(out)
			copyDir(t, out, old)
		}},
		{"staging left", func(t *testing.T, out string) {
			_, prefix, _ := outNames(out)
			copyDir(t, out, filepath.Join(filepath.Dir(out), prefix+"123456"))
		}},
		{"swapped, old not removed", func(t *testing.T, out string) {
			_, prefix, _ := outNames(out)
			copyDir(t, out, filepath.Join(filepath.Dir(out), prefix+"999"))
			os.WriteFile(filepath.Join(filepath.Dir(out), prefix+"999", "marker"), nil, 0o644)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			if _, err := Run(ctx, options(src, out)); err != nil {
				t.Fatal(err)
			}
			want, _ := os.ReadFile(filepath.Join(out, RootfsFile))
			tc.crash(t, out)
			var progress strings.Builder
			o := options(src, out)
			o.Progress = &progress
			if _, err := Run(ctx, o); err != nil {
				t.Fatalf("the run after the crash: %v", err)
			}
			got, err := os.ReadFile(filepath.Join(out, RootfsFile))
			if err != nil || string(got) != string(want) {
				t.Errorf("output after recovery: %v (equal %v)", err, string(got) == string(want))
			}
			assertNoLitter(t, out)
		})
	}
}

// TestRunConcurrentSameOut: several runs into one --out at once all
// succeed, one after the other, and leave one complete output.
func TestRunConcurrentSameOut(t *testing.T) {
	ctx := context.Background()
	src := layoutSource(t, sampleImage(t))
	out := filepath.Join(t.TempDir(), "out")
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = Run(ctx, options(src, out))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("run %d: %v", i, err)
		}
	}
	if _, err := os.Stat(filepath.Join(out, RootfsFile)); err != nil {
		t.Error(err)
	}
	assertNoLitter(t, out)
}

// TestRunWaitsForLock: a run into an --out that another holds waits, says
// so, and gives up when cancelled, leaving the output alone.
func TestRunWaitsForLock(t *testing.T) {
	src := layoutSource(t, sampleImage(t))
	out := filepath.Join(t.TempDir(), "out")
	if _, err := Run(context.Background(), options(src, out)); err != nil {
		t.Fatal(err)
	}
	lockPath, _, _ := outNames(out)
	l, err := lock.Try(lockPath)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	var progress syncBuilder
	o := options(src, out)
	o.Progress = &progress
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, o)
		done <- err
	}()
	for !strings.Contains(progress.String(), "waiting for another docker2vm run") {
		select {
		case err := <-done:
			t.Fatalf("the run did not wait: %v", err)
		default:
		}
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if _, err := os.Stat(filepath.Join(out, RootfsFile)); err != nil {
		t.Error(err)
	}
}

// assertNoLitter checks that nothing but out is left beside out (no
// staging, no lock file).
func assertNoLitter(t *testing.T, out string) {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Dir(out))
	for _, e := range ents {
		if p := filepath.Join(filepath.Dir(out), e.Name()); p != out {
			t.Errorf("left beside the output: %s", e.Name())
		}
	}
	t.Logf("publication: diskio %s", diskio.Impl)
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestOutChecksFirst: --out is checked before anything is fetched (a
// registry that does not exist is never asked), the dry run refuses what
// the run would, and --force never takes the root or home directory.
func TestOutChecksFirst(t *testing.T) {
	ctx := context.Background()
	userDir := t.TempDir()
	os.WriteFile(filepath.Join(userDir, "precious"), []byte("x"), 0o644)
	unreachable := image.Source{Kind: image.KindRegistry, Ref: "127.0.0.1:1/nothing:here"}
	home, _ := os.UserHomeDir()
	for _, tc := range []struct {
		name  string
		out   string
		force bool
		want  string
	}{
		{"foreign dir", userDir, false, "does not hold a docker2vm output"},
		{"force root", "/", true, "refused even with --force"},
		{"force home", home, true, "refused even with --force"},
		{"force a parent of home", filepath.Dir(home), true, "refused even with --force"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := options(unreachable, tc.out)
			o.Force = tc.force
			if _, err := Run(ctx, o); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Run: %v, want %q", err, tc.want)
			}
			if _, err := PlanConversion(ctx, o); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("PlanConversion: %v, want %q", err, tc.want)
			}
		})
	}
	if b, _ := os.ReadFile(filepath.Join(userDir, "precious")); string(b) != "x" {
		t.Error("the user's file changed")
	}
}

// TestForceNeverTakes: --force replaces a directory of other files only
// when it holds nothing the run depends on or that is not its to remove:
// each case in a scratch tree of its own, the directory left as it was.
func TestForceNeverTakes(t *testing.T) {
	ctx := context.Background()
	unreachable := image.Source{Kind: image.KindRegistry, Ref: "127.0.0.1:1/nothing:here"}
	for _, tc := range []struct {
		name string
		// setup makes the tree under root and returns --out, editing o.
		setup func(t *testing.T, root string, o *Options) string
		want  string // "" when --force may replace it
	}{
		{"the layout's parent (--out LAYOUT/..)", func(t *testing.T, root string, o *Options) string {
			o.Source = image.Source{Kind: image.KindOCILayout, Ref: filepath.Join(root, "img")}
			mkdirs(t, root, "img")
			return filepath.Join(root, "img", "..")
		}, "holds the image source"},
		{"the archive itself's directory", func(t *testing.T, root string, o *Options) string {
			o.Source = image.Source{Kind: image.KindOCIArchive, Ref: filepath.Join(root, "in", "app.tar")}
			mkdirs(t, root, "in")
			os.WriteFile(filepath.Join(root, "in", "app.tar"), nil, 0o644)
			return filepath.Join(root, "in")
		}, "holds the image source"},
		{"the working directory", func(t *testing.T, root string, o *Options) string {
			mkdirs(t, root, "wd")
			t.Chdir(filepath.Join(root, "wd"))
			return "."
		}, "is the working directory"},
		{"a parent of the working directory", func(t *testing.T, root string, o *Options) string {
			mkdirs(t, root, "a/b")
			t.Chdir(filepath.Join(root, "a", "b"))
			return ".."
		}, "holds the working directory"},
		{"the base", func(t *testing.T, root string, o *Options) string {
			mkdirs(t, root, "bases/amd64")
			o.Base.Dir = filepath.Join(root, "bases", "amd64")
			return filepath.Join(root, "bases")
		}, "holds the base bundle (--base)"},
		{"GONDOLIN_GUEST_DIR", func(t *testing.T, root string, o *Options) string {
			mkdirs(t, root, "guest")
			o.Base.Getenv = func(k string) string {
				if k == "GONDOLIN_GUEST_DIR" {
					return filepath.Join(root, "guest")
				}
				return ""
			}
			return filepath.Join(root, "guest")
		}, "is the base bundle (GONDOLIN_GUEST_DIR)"},
		{"the cache", func(t *testing.T, root string, o *Options) string {
			mkdirs(t, root, "c/docker2vm")
			o.Image.CacheDir = filepath.Join(root, "c", "docker2vm")
			return filepath.Join(root, "c")
		}, "holds the cache directory"},
		{"the publish directory", func(t *testing.T, root string, o *Options) string {
			mkdirs(t, root, "site/registry")
			o.Publish = filepath.Join(root, "site", "registry")
			o.Mode, o.Tag, o.Plain = ModeAssets, "app:1", false
			return filepath.Join(root, "site")
		}, "holds the publish directory"},
		{"$TMPDIR", func(t *testing.T, root string, o *Options) string {
			mkdirs(t, root, "scratch/tmp")
			t.Setenv("TMPDIR", filepath.Join(root, "scratch", "tmp"))
			return filepath.Join(root, "scratch")
		}, "holds the temporary directory ($TMPDIR)"},
		{"a sticky directory", func(t *testing.T, root string, o *Options) string {
			mkdirs(t, root, "shared")
			if err := os.Chmod(filepath.Join(root, "shared"), 0o777|os.ModeSticky); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(root, "shared")
		}, "has the sticky bit"},
		{"a directory of the user's files, of its own", func(t *testing.T, root string, o *Options) string {
			mkdirs(t, root, "old-output")
			return filepath.Join(root, "old-output")
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, err := filepath.EvalSymlinks(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			o := options(unreachable, "")
			o.Force = true
			o.OutDir = tc.setup(t, root, &o)
			out, _ := filepath.Abs(o.OutDir)
			precious := filepath.Join(out, "precious")
			if err := os.WriteFile(precious, []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			err = checkOut(o)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("checkOut: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "refused even with --force") {
				t.Fatalf("checkOut: %v, want %q", err, tc.want)
			}
			// The run refuses it too, and leaves it as it was.
			if _, err := Run(ctx, o); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run: %v, want %q", err, tc.want)
			}
			if b, _ := os.ReadFile(precious); string(b) != "x" {
				t.Fatal("the user's file changed")
			}
		})
	}
}

// TestForceMountPoint: --force does not replace a mounted filesystem's
// root (an empty tmpfs mounted there, holding a file).
func TestForceMountPoint(t *testing.T) {
	require.Root(t, "to mount a tmpfs")
	if diskio.Impl == "portable" {
		t.Skip("the portable file I/O cannot tell filesystems apart (diskio.SameDevice)")
	}
	mnt := filepath.Join(t.TempDir(), "mnt")
	mkdirs(t, filepath.Dir(mnt), "mnt")
	if err := mountTmpfs(mnt); err != nil {
		require.Missing(t, "mounting a tmpfs: %v", err)
	}
	t.Cleanup(func() { unmount(mnt) })
	os.WriteFile(filepath.Join(mnt, "precious"), []byte("x"), 0o644)
	o := options(image.Source{Kind: image.KindRegistry, Ref: "127.0.0.1:1/nothing:here"}, mnt)
	o.Force = true
	if err := checkOut(o); err == nil || !strings.Contains(err.Error(), "is the root of a mounted filesystem") {
		t.Fatalf("checkOut: %v", err)
	}
}

func mkdirs(t *testing.T, root string, rel string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(root, filepath.FromSlash(rel)), 0o755); err != nil {
		t.Fatal(err)
	}
}
