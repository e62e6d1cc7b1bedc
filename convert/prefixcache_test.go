package convert

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/docker2vm/docker2vm/gondolin"
	"github.com/docker2vm/docker2vm/image"
	"github.com/docker2vm/docker2vm/internal/cachedir"
	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/testenv/gondolintest"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
	"github.com/docker2vm/docker2vm/internal/testtar"
)

// prefixLayers are five layers that make the writer's state interesting
// at every boundary: files overwritten and removed by later layers (their
// blocks released and reused), a hardlink across layers, an opaque
// directory, files of several extents, holes.
func prefixLayers(t *testing.T) [][]byte {
	big := func(seed byte, n int) string { return string(testtar.Incompressible(seed, n)) }
	return [][]byte{
		layerTar(t, testtar.Dir("etc/"), testtar.File("etc/os-release", "ID=prefix\n"),
			testtar.Dir("data/"), testtar.File("data/a", big(1, 300<<10)), testtar.File("data/b", big(2, 70<<10)),
			testtar.Dir("opt/"), testtar.Dir("opt/x/"), testtar.File("opt/x/old", "old")),
		layerTar(t, testtar.File("data/a", big(3, 100<<10)), testtar.Hardlink("data/a2", "data/a"),
			testtar.File("sparse", string(make([]byte, 64<<10))+"end")),
		layerTar(t, testtar.Whiteout("data/b"), testtar.Opaque("opt/x"), testtar.File("opt/x/new", "new"),
			testtar.File("data/c", big(4, 200<<10))),
		layerTar(t, testtar.File("data/d", big(5, 50<<10)), testtar.Symlink("bin", "usr/bin"),
			testtar.Dir("usr/"), testtar.Dir("usr/bin/"), testtar.File("usr/bin/tool", "#!/bin/sh\n").Mode(0o755)),
		layerTar(t, testtar.Whiteout("data/a"), testtar.File("etc/motd", "last layer\n")),
	}
}

// imageOf is an OCI layout of layers, compressed alternately.
func imageOf(t *testing.T, layers ...[]byte) v1.Image {
	var ls []v1.Layer
	for i, l := range layers {
		c := imagetest.Gzip
		if i%2 == 1 {
			c = imagetest.Zstd
		}
		ls = append(ls, imagetest.NewLayer(t, l, c, true))
	}
	return imagetest.New(t, imagetest.Spec{OCI: true, Layers: ls})
}

func rootfsSum(t *testing.T, dir string) string {
	return fmt.Sprintf("%x", sha256.Sum256(readRootfs(t, dir)))
}

func prefixEntries(t *testing.T, cache string) []string {
	t.Helper()
	return dirNames(t, cachedir.PrefixesDir(cache))
}

// TestPrefixCacheEveryPrefix: images of 2 to 5 layers, each the one before
// with one more layer, and one with another last layer, are converted in
// turn with the cache; each but the first resumes from the state its
// predecessor stored (after every layer count from 1 to 4 in turn), and
// every output is byte for byte the cold conversion's.
func TestPrefixCacheEveryPrefix(t *testing.T) {
	ctx := context.Background()
	layers := prefixLayers(t)
	other := layerTar(t, testtar.File("etc/motd", "another last layer\n"), testtar.Whiteout("usr"))
	type step struct {
		layers  [][]byte
		resumed int // the prefix it resumes from, 0 for none
	}
	steps := []step{{layers[:2], 0}, {layers[:3], 1}, {layers[:4], 2}, {layers[:5], 3}, {append(layers[:4:4], other), 4}}
	cache := t.TempDir()
	for _, s := range steps {
		n := len(s.layers)
		name := fmt.Sprintf("%d layers, last %x", n, sha256.Sum256(s.layers[n-1]))[:20]
		t.Run(name, func(t *testing.T) {
			src := layoutSource(t, imageOf(t, s.layers...))
			cold := filepath.Join(t.TempDir(), "cold")
			if _, err := Run(ctx, options(src, cold)); err != nil {
				t.Fatal(err)
			}
			var progress bytes.Buffer
			warm := filepath.Join(t.TempDir(), "warm")
			if _, err := Run(ctx, cachedOptions(src, warm, cache, &progress)); err != nil {
				t.Fatal(err)
			}
			reused := strings.Contains(progress.String(), "reused the merged state after layer")
			if want := fmt.Sprintf("reused the merged state after layer %d/%d", s.resumed, n); s.resumed > 0 && !strings.Contains(progress.String(), want) || s.resumed == 0 && reused {
				t.Errorf("resumed %v, want from %d layers:\n%s", reused, s.resumed, progress.String())
			}
			if rootfsSum(t, warm) != rootfsSum(t, cold) {
				t.Fatalf("the conversion resumed after %d layers differs from the cold one", s.resumed)
			}
			if strings.Contains(progress.String(), "not stored") {
				t.Errorf("a prefix was not stored:\n%s", progress.String())
			}
		})
	}
	if got := len(prefixEntries(t, cache)); got != 4 {
		t.Errorf("%d prefix entries, want 4 (after 1, 2, 3 and 4 layers)", got)
	}
	es, err := cachedir.List(cache)
	if err != nil {
		t.Fatal(err)
	}
	prefixes := 0
	for _, e := range es {
		if e.Kind == "prefix" {
			prefixes++
			if !strings.HasPrefix(e.Of, "layers 1-") {
				t.Errorf("prefix entry %s is labelled %q", e.ID, e.Of)
			}
		}
	}
	if prefixes != 4 {
		t.Errorf("cachedir.List shows %d prefix entries", prefixes)
	}
}

// TestPrefixCacheWithBase: with the fixture Gondolin base, whose glue is
// read into the image before the layers (and again into a resumed one),
// resumed conversions in assets mode are the cold ones, byte for byte.
func TestPrefixCacheWithBase(t *testing.T) {
	baseDir := gondolintest.BaseBundle(t)
	ctx := context.Background()
	layers := prefixLayers(t)
	cache := t.TempDir()
	for _, n := range []int{3, 4, 5} {
		src := layoutSource(t, imageOf(t, layers[:n]...))
		withBase := func(o Options) Options {
			o.Plain, o.Mode = false, ModeAssets
			o.Base = gondolin.BaseOptions{Dir: baseDir, Platform: "linux/amd64", NoDownload: true}
			return o
		}
		cold := filepath.Join(t.TempDir(), "cold")
		if _, err := Run(ctx, withBase(options(src, cold))); err != nil {
			t.Fatal(err)
		}
		var progress bytes.Buffer
		warm := filepath.Join(t.TempDir(), "warm")
		if _, err := Run(ctx, withBase(cachedOptions(src, warm, cache, &progress))); err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("reused the merged state after layer %d/%d", n-2, n); n > 3 && !strings.Contains(progress.String(), want) {
			t.Errorf("%d layers: no %q in:\n%s", n, want, progress.String())
		}
		if rootfsSum(t, warm) != rootfsSum(t, cold) {
			t.Fatalf("%d layers: the resumed conversion differs from the cold one", n)
		}
	}
}

// TestPrefixCacheDamaged: an entry whose image, tree, record or writer
// state was changed, truncated or replaced is never used: the conversion
// runs cold (and is right), the entry is removed, and the next conversion
// stores a good one again.
func TestPrefixCacheDamaged(t *testing.T) {
	ctx := context.Background()
	layers := prefixLayers(t)
	first := layoutSource(t, imageOf(t, layers[:3]...))
	// One more layer: it copies the state after the first's two (resume);
	// another third layer: it takes that state, which it stores again
	// (take).
	for _, second := range []struct {
		name string
		src  image.Source
	}{
		{"copied", layoutSource(t, imageOf(t, layers[:4]...))},
		{"taken", layoutSource(t, imageOf(t, layers[0], layers[1], layerTar(t, testtar.File("other", "x"))))},
	} {
		t.Run(second.name, func(t *testing.T) { damagedCases(t, ctx, first, second.src) })
	}
}

func damagedCases(t *testing.T, ctx context.Context, first, second image.Source) {
	cold := filepath.Join(t.TempDir(), "cold")
	if _, err := Run(ctx, options(second, cold)); err != nil {
		t.Fatal(err)
	}
	flipAt := func(name string, frac float64) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			p := filepath.Join(dir, name)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			i := int(float64(len(b)-1) * frac)
			for b[i] == 0 && i < len(b)-1 {
				i++ // a byte that is data, not a hole
			}
			b[i] ^= 0x40
			os.WriteFile(p, b, 0o644)
		}
	}
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string)
	}{
		{"image byte", flipAt(prefixImageFile, 0.5)},
		{"image truncated", func(t *testing.T, dir string) { os.Truncate(filepath.Join(dir, prefixImageFile), 4096) }},
		{"tree byte", flipAt(prefixStateFile, 0.7)},
		{"tree missing", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, prefixStateFile)) }},
		{"record not json", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, cachedir.PrefixFile), []byte("{"), 0o644)
		}},
		{"writer state", func(t *testing.T, dir string) {
			p := filepath.Join(dir, cachedir.PrefixFile)
			b, _ := os.ReadFile(p)
			var e prefixEntry
			if err := json.Unmarshal(b, &e); err != nil {
				t.Fatal(err)
			}
			e.Checkpoint = e.GlueCheckpoint // a valid checkpoint, the wrong one
			writeJSON(p, e)
		}},
		{"a symlink", func(t *testing.T, dir string) {
			os.RemoveAll(dir)
			os.Symlink(t.TempDir(), dir)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cache := t.TempDir()
			if _, err := Run(ctx, cachedOptions(first, filepath.Join(t.TempDir(), "a"), cache, nil)); err != nil {
				t.Fatal(err)
			}
			keys := prefixEntries(t, cache)
			if len(keys) != 1 {
				t.Fatalf("prefix entries %v", keys)
			}
			tc.damage(t, filepath.Join(cachedir.PrefixesDir(cache), keys[0]))
			var progress bytes.Buffer
			out := filepath.Join(t.TempDir(), "b")
			if _, err := Run(ctx, cachedOptions(second, out, cache, &progress)); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(progress.String(), "reused the merged state") || !strings.Contains(progress.String(), "prefix cache: the entry") {
				t.Errorf("a damaged entry was used or not reported:\n%s", progress.String())
			}
			if rootfsSum(t, out) != rootfsSum(t, cold) {
				t.Fatal("the output differs from the cold conversion's")
			}
			// The entry stored again (the taken case has the same key) is
			// a good one: a third run uses it.
			progress.Reset()
			again := filepath.Join(t.TempDir(), "c")
			if _, err := Run(ctx, cachedOptions(second, again, cache, &progress)); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(progress.String(), "reused the merged state") || rootfsSum(t, again) != rootfsSum(t, cold) {
				t.Errorf("the entry stored after the damaged one was not used, or gave another output:\n%s", progress.String())
			}
			if got := prefixEntries(t, cache); len(got) != 1 {
				t.Errorf("prefix entries after the run: %v, want the one it stored", got)
			}
		})
	}
}

// TestPrefixCacheBoundedByCacheMax: a state larger than half of
// --cache-max is not kept (it would push most of the cache out); the run
// says so and succeeds.
func TestPrefixCacheBoundedByCacheMax(t *testing.T) {
	src := layoutSource(t, imageOf(t, prefixLayers(t)[:3]...))
	cache := t.TempDir()
	var progress bytes.Buffer
	o := cachedOptions(src, filepath.Join(t.TempDir(), "out"), cache, &progress)
	o.CacheMax = 64 << 10 // smaller than twice the 300 KiB the first layer writes
	if _, err := Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if got := prefixEntries(t, cache); len(got) != 0 || !strings.Contains(progress.String(), "more than half the cache's limit") {
		t.Errorf("prefix entries %v; progress:\n%s", got, progress.String())
	}
	for _, m := range []struct{ max, want int64 }{{-1, 0}, {0, cachedir.DefaultMax / 2}, {1 << 30, 1 << 29}} {
		if got := prefixMax(m.max); got != m.want {
			t.Errorf("prefixMax(%d) = %d, want %d", m.max, got, m.want)
		}
	}
}

// TestPrefixCacheTakeFullDisk: when the image taken from an entry for the
// output cannot be copied back into the cache (its disk is full), the run
// goes on with the image it took, as a resumed run, and says why the
// entry is gone.
func TestPrefixCacheTakeFullDisk(t *testing.T) {
	require.Integration(t, "mounts a tmpfs")
	require.Root(t, "to mount a small tmpfs")
	ctx := context.Background()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	layers := prefixLayers(t)
	first := layoutSource(t, imageOf(t, layers...))
	edited := layoutSource(t, imageOf(t, append(layers[:4:4], layerTar(t, testtar.File("etc/motd", "edited\n")))...))
	cache := filepath.Join(dir, "cache")
	if _, err := Run(ctx, cachedOptions(first, filepath.Join(dir, "first"), cache, nil)); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(dir, "first"))
	entries := prefixEntries(t, cache)
	if len(entries) != 1 {
		t.Fatalf("prefix entries %v, want the one after 4 layers", entries)
	}
	var st syscall.Stat_t
	var fs syscall.Statfs_t
	if err := syscall.Stat(filepath.Join(cachedir.PrefixesDir(cache), entries[0], prefixImageFile), &st); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	// Room for half the stored image: the take's rename fits, its copy back does not.
	fill := int64(fs.Bavail)*int64(fs.Bsize) - st.Blocks*512/2
	if err := os.WriteFile(filepath.Join(dir, "filler"), make([]byte, fill), 0o644); err != nil {
		t.Fatalf("filling the tmpfs: %v", err)
	}
	var progress bytes.Buffer
	warm := filepath.Join(dir, "edited")
	if _, err := Run(ctx, cachedOptions(edited, warm, cache, &progress)); err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	for _, want := range []string{"reused the merged state after layer 4/5", "could not be copied back (", "no space left on device"} {
		if !strings.Contains(progress.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want, progress.String())
		}
	}
	cold := filepath.Join(t.TempDir(), "cold")
	if _, err := Run(ctx, options(edited, cold)); err != nil {
		t.Fatal(err)
	}
	if rootfsSum(t, warm) != rootfsSum(t, cold) {
		t.Error("the resumed conversion differs from the cold one")
	}
}
