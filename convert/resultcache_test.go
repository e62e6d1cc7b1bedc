package convert

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/docker2vm/docker2vm/ext4"
	"github.com/docker2vm/docker2vm/image"
	"github.com/docker2vm/docker2vm/internal/cachedir"
	"github.com/docker2vm/docker2vm/internal/diskio"
	"github.com/docker2vm/docker2vm/internal/lock"
	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/testenv/registrytest"
	"github.com/docker2vm/docker2vm/rootfs"
)

// registrySource pushes the sample image to a real registry and returns a
// tag reference and a digest reference to it.
func registrySource(t *testing.T) (tag, digest image.Source) {
	t.Helper()
	return registrySourceOf(t, nil)
}

// registrySourceOf pushes img (nil: the sample image).
func registrySourceOf(t *testing.T, img v1.Image) (tag, digest image.Source) {
	t.Helper()
	require.Integration(t, "starts a registry")
	reg := registrytest.Start(t, registrytest.Options{})
	if img == nil {
		img = sampleImage(t)
	}
	ref := reg.Push(t, "sample:1", img, nil)
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return image.Source{Kind: image.KindRegistry, Ref: ref},
		image.Source{Kind: image.KindRegistry, Ref: reg.Ref("sample@" + d.String())}
}

func cachedOptions(src image.Source, out, cache string, progress *bytes.Buffer) Options {
	o := options(src, out)
	o.Image.NoCache = false
	o.Image.CacheDir = cache
	if progress != nil {
		o.Progress = progress
	}
	return o
}

func readMeta(t *testing.T, dir string) Metadata {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, MetadataFile))
	if err != nil {
		t.Fatal(err)
	}
	var m Metadata
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func readRootfs(t *testing.T, dir string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, RootfsFile))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func entries(t *testing.T, cache string) []string {
	t.Helper()
	return dirNames(t, cachedir.ResultsDir(cache))
}

// dirNames lists dir's names; none when it is missing.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

const reusedLine = "reused the result of an earlier identical conversion"

// anyHit is in the progress of every result-cache hit: a copy (reusedLine)
// or a kept output (keptLine).
const anyHit = "identical conversion"

func TestResultCacheHitMissAndCorruption(t *testing.T) {
	ctx := context.Background()
	tagSrc, digestSrc := registrySource(t)
	cache := t.TempDir()
	work := t.TempDir()

	var p1 bytes.Buffer
	out1 := filepath.Join(work, "out1")
	if _, err := Run(ctx, cachedOptions(tagSrc, out1, cache, &p1)); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(p1.String(), anyHit) {
		t.Fatalf("first run reused a result:\n%s", p1.String())
	}
	if got := entries(t, cache); len(got) != 1 {
		t.Fatalf("result cache entries after the first run: %q", got)
	}
	// cache du tells what each entry is of.
	listed, err := cachedir.List(cache)
	if err != nil {
		t.Fatal(err)
	}
	layers := 0
	for _, e := range listed {
		want := map[string]string{"result": tagSrc.Ref + " linux/amd64", "blob": "layer of " + tagSrc.Ref,
			"prefix": "layers 1-2 of " + tagSrc.Ref + " linux/amd64"}[e.Kind]
		if e.Kind == "blob" && e.Of == want {
			layers++
		} else if e.Of != want && (e.Kind != "blob" || e.Of != "") { // the config blob is of nothing
			t.Errorf("%s %s: Of %q, want %q", e.Kind, e.ID, e.Of, want)
		}
	}
	if layers == 0 {
		t.Error("no blob is labelled as a layer of the image")
	}
	want := readRootfs(t, out1)
	wantMeta := readMeta(t, out1)

	// Same image by digest, same options: a hit, byte-identical output,
	// the same meta.json except generatedAt and the source.
	var p2 bytes.Buffer
	out2 := filepath.Join(work, "out2")
	o := cachedOptions(digestSrc, out2, cache, &p2)
	o.Now = func() time.Time { return time.Unix(1900000000, 0) }
	if _, err := Run(ctx, o); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p2.String(), reusedLine) || strings.Contains(p2.String(), "applied layer") {
		t.Fatalf("second run did not reuse the result:\n%s", p2.String())
	}
	if !bytes.Equal(readRootfs(t, out2), want) {
		t.Fatal("the reused rootfs.ext4 differs from the converted one")
	}
	gotMeta := readMeta(t, out2)
	if gotMeta.GeneratedAt == wantMeta.GeneratedAt || gotMeta.Source.Ref != digestSrc.Ref {
		t.Errorf("per-run fields not refreshed: %+v", gotMeta)
	}
	gotMeta.GeneratedAt, gotMeta.Source = wantMeta.GeneratedAt, wantMeta.Source
	if !reflect.DeepEqual(gotMeta, wantMeta) {
		t.Errorf("meta.json of the hit differs:\n got %+v\nwant %+v", gotMeta, wantMeta)
	}
	// The output is a copy, not a link to the entry.
	entryRootfs := filepath.Join(cachedir.ResultsDir(cache), entries(t, cache)[0], RootfsFile)
	a, _ := os.Stat(entryRootfs)
	b, _ := os.Stat(filepath.Join(out2, RootfsFile))
	if os.SameFile(a, b) || b.Sys().(*syscall.Stat_t).Nlink != 1 {
		t.Error("the output shares its inode with the cache entry")
	}

	// Another label: a miss, and a second entry.
	var p3 bytes.Buffer
	o = cachedOptions(tagSrc, filepath.Join(work, "out3"), cache, &p3)
	o.FS.Label = "other"
	if _, err := Run(ctx, o); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(p3.String(), anyHit) {
		t.Fatalf("a run with another label reused a result:\n%s", p3.String())
	}
	if got := entries(t, cache); len(got) != 2 {
		t.Fatalf("entries after a changed option: %q", got)
	}

	// A lower limit is another key: the conversion runs, and refuses.
	o = cachedOptions(tagSrc, filepath.Join(work, "out4"), cache, nil)
	o.Limits = rootfs.Limits{MaxEntries: 3}
	if _, err := Run(ctx, o); err == nil {
		t.Fatal("a lower entry limit was not enforced with a warm result cache")
	}

	// Corrupt the first entry: flip one byte in a data region.
	data, err := os.ReadFile(entryRootfs)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(data, []byte("hello from layer 3"))
	if i < 0 {
		t.Fatal("file content not found in the cached rootfs")
	}
	data[i] ^= 0x20
	if err := os.WriteFile(entryRootfs, data, 0o644); err != nil {
		t.Fatal(err)
	}
	var p5 bytes.Buffer
	out5 := filepath.Join(work, "out5")
	if _, err := Run(ctx, cachedOptions(tagSrc, out5, cache, &p5)); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(p5.String(), anyHit) || !strings.Contains(p5.String(), "applied layer") ||
		!strings.Contains(p5.String(), "failed its check and was removed") {
		t.Fatalf("a corrupt entry was reused:\n%s", p5.String())
	}
	if !bytes.Equal(readRootfs(t, out5), want) {
		t.Fatal("the conversion after a corrupt entry differs from the original")
	}
	// The entry was replaced by a good one: the next run hits again.
	var p6 bytes.Buffer
	out6 := filepath.Join(work, "out6")
	if _, err := Run(ctx, cachedOptions(tagSrc, out6, cache, &p6)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p6.String(), reusedLine) || !bytes.Equal(readRootfs(t, out6), want) {
		t.Fatalf("no good hit after the corrupt entry was redone:\n%s", p6.String())
	}
	for _, n := range entries(t, cache) {
		if strings.HasPrefix(n, ".") {
			t.Errorf("temporary entry left behind: %s", n)
		}
	}
}

func TestResultCacheOnlyForCachedRegistrySources(t *testing.T) {
	ctx := context.Background()
	tagSrc, _ := registrySource(t)
	cache := t.TempDir()
	work := t.TempDir()

	// --no-cache disables the result cache too.
	for i := range 2 {
		var p bytes.Buffer
		o := cachedOptions(tagSrc, filepath.Join(work, "nocache"), cache, &p)
		o.Image.NoCache = true
		if _, err := Run(ctx, o); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(p.String(), anyHit) {
			t.Fatalf("run %d with NoCache reused a result", i)
		}
	}
	if got := entries(t, cache); len(got) != 0 {
		t.Fatalf("NoCache stored results: %q", got)
	}

	// Layouts are always converted from their blobs.
	src := layoutSource(t, sampleImage(t))
	for range 2 {
		var p bytes.Buffer
		if _, err := Run(ctx, cachedOptions(src, filepath.Join(work, "layout"), cache, &p)); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(p.String(), anyHit) {
			t.Fatal("a layout source reused a result")
		}
	}
	if got := entries(t, cache); len(got) != 0 {
		t.Fatalf("a layout source stored results: %q", got)
	}
}

func TestResultCacheConcurrent(t *testing.T) {
	ctx := context.Background()
	tagSrc, _ := registrySource(t)
	cache := t.TempDir()
	work := t.TempDir()
	// Twice: both miss and store at once, then both hit at once.
	for round := range 2 {
		var wg sync.WaitGroup
		outs := []string{filepath.Join(work, "a"), filepath.Join(work, "b")}
		errs := make([]error, len(outs))
		for i, out := range outs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = Run(ctx, cachedOptions(tagSrc, out, cache, nil))
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if !bytes.Equal(readRootfs(t, outs[0]), readRootfs(t, outs[1])) {
			t.Fatalf("round %d: concurrent conversions differ", round)
		}
		if got := entries(t, cache); len(got) != 1 {
			t.Fatalf("round %d: entries %q", round, got)
		}
	}
}

// TestResultKeyCoversExt4Options fails when ext4.Options grows a field the
// key does not know about.
func TestResultKeyCoversExt4Options(t *testing.T) {
	known := map[string]bool{"Source": true} // not cacheable: see resultCacheEligible
	kt := reflect.TypeOf(resultKeyFS{})
	for i := range kt.NumField() {
		known[kt.Field(i).Name] = true
	}
	ot := reflect.TypeOf(ext4.Options{})
	for i := range ot.NumField() {
		if !known[ot.Field(i).Name] {
			t.Errorf("ext4.Options.%s is not part of the result cache key", ot.Field(i).Name)
		}
	}
	lt := reflect.TypeOf(rootfs.Limits{})
	if lt.NumField() != 3 {
		t.Errorf("rootfs.Limits changed: check that the key (which embeds it) still covers it")
	}
}

const keptLine = "kept the unchanged rootfs.ext4 of"

func inodeOf(t *testing.T, p string) (ino, nlink uint64) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Ino, uint64(st.Nlink)
}

// TestResultCacheKeepsUnchangedOutput: converting again into the same --out
// keeps its rootfs.ext4 (same inode, one name, nothing copied) when it is
// unchanged, and copies the cached result instead when it was modified or
// has another name.
func TestResultCacheKeepsUnchangedOutput(t *testing.T) {
	ctx := context.Background()
	tagSrc, _ := registrySource(t)
	cache := t.TempDir()
	work := t.TempDir()
	out := filepath.Join(work, "out")
	run := func() string {
		t.Helper()
		var p bytes.Buffer
		if _, err := Run(ctx, cachedOptions(tagSrc, out, cache, &p)); err != nil {
			t.Fatal(err)
		}
		return p.String()
	}
	run()
	want := readRootfs(t, out)
	rootfsPath := filepath.Join(out, RootfsFile)

	if diskio.Impl == "portable" {
		// Without a file identity to trust, a hit always copies.
		if p := run(); !strings.Contains(p, reusedLine) || strings.Contains(p, keptLine) {
			t.Fatalf("portable: the second run did not copy from the cache:\n%s", p)
		}
		if !bytes.Equal(readRootfs(t, out), want) {
			t.Fatal("copied rootfs.ext4 differs")
		}
		return
	}

	// Unchanged: kept.
	ino1, _ := inodeOf(t, rootfsPath)
	if p := run(); !strings.Contains(p, keptLine) || strings.Contains(p, "applied layer") {
		t.Fatalf("second run did not keep the output:\n%s", p)
	}
	ino2, nlink := inodeOf(t, rootfsPath)
	if ino2 != ino1 || nlink != 1 {
		t.Errorf("kept rootfs.ext4: inode %d (was %d), %d names; want the same inode with one name", ino2, ino1, nlink)
	}
	if !bytes.Equal(readRootfs(t, out), want) {
		t.Fatal("kept rootfs.ext4 differs")
	}
	if ents, _ := filepath.Glob(filepath.Join(work, ".out.tmp-*")); len(ents) != 0 {
		t.Errorf("staging left behind: %q", ents)
	}
	// And again: the record follows the file (publishing changed its ctime).
	if p := run(); !strings.Contains(p, keptLine) {
		t.Fatalf("third run did not keep the output:\n%s", p)
	}
	if ino, _ := inodeOf(t, rootfsPath); ino != ino1 {
		t.Errorf("third run replaced the kept file")
	}

	// Modified (say, the guest wrote to it): copied from the cache, fresh.
	f, err := os.OpenFile(rootfsPath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("scribble"), 2048); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// As if written a while later (the write above may share the clock
	// tick of the publication on kernels with coarse timestamps).
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(rootfsPath, later, later); err != nil {
		t.Fatal(err)
	}
	if p := run(); strings.Contains(p, keptLine) || !strings.Contains(p, reusedLine) {
		t.Fatalf("a modified output was kept:\n%s", p)
	}
	if !bytes.Equal(readRootfs(t, out), want) {
		t.Fatal("rootfs.ext4 after replacing a modified output differs from the conversion")
	}

	// Another name for it (a user's hardlink): never kept, and that name
	// keeps its own file.
	other := filepath.Join(work, "mine.ext4")
	if err := os.Link(rootfsPath, other); err != nil {
		t.Fatal(err)
	}
	inoOther, _ := inodeOf(t, other)
	if p := run(); strings.Contains(p, keptLine) {
		t.Fatalf("a hardlinked output was kept:\n%s", p)
	}
	if ino, _ := inodeOf(t, rootfsPath); ino == inoOther {
		t.Error("the new output shares its inode with the user's hardlink")
	}
	if ino, nlink := inodeOf(t, other); ino != inoOther || nlink != 1 {
		t.Errorf("the user's hardlink: inode %d (was %d), %d names", ino, inoOther, nlink)
	}
}

// TestResultCacheDebris: what a failed or hostile store leaves where an
// entry belongs (a directory without result.json, as a store that ran out
// of space left it; a symlink out of the cache) never blocks the key and
// never leads a write out of the cache.
func TestResultCacheDebris(t *testing.T) {
	ctx := context.Background()
	tagSrc, _ := registrySource(t)
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, entry, outside string)
	}{
		{"incomplete entry", func(t *testing.T, entry, outside string) {
			os.Remove(filepath.Join(entry, cachedir.ResultFile))
			os.Remove(filepath.Join(entry, RootfsFile))
		}},
		{"symlink out of the cache", func(t *testing.T, entry, outside string) {
			if err := os.RemoveAll(entry); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(outside, entry); err != nil {
				t.Fatal(err)
			}
		}},
		{"file", func(t *testing.T, entry, outside string) {
			os.RemoveAll(entry)
			os.WriteFile(entry, []byte("x"), 0o644)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cache, work, outside := t.TempDir(), t.TempDir(), t.TempDir()
			if _, err := Run(ctx, cachedOptions(tagSrc, filepath.Join(work, "a"), cache, nil)); err != nil {
				t.Fatal(err)
			}
			keys := entries(t, cache)
			if len(keys) != 1 {
				t.Fatalf("entries: %v", keys)
			}
			entry := filepath.Join(cachedir.ResultsDir(cache), keys[0])
			tc.plant(t, entry, outside)
			for i, out := range []string{"b", "b", "c"} {
				var p bytes.Buffer
				if _, err := Run(ctx, cachedOptions(tagSrc, filepath.Join(work, out), cache, &p)); err != nil {
					t.Fatalf("run %d: %v", i, err)
				}
				if i == 0 && strings.Contains(p.String(), anyHit) {
					t.Errorf("run %d used the planted entry:\n%s", i, p.String())
				}
				if i > 0 && !strings.Contains(p.String(), anyHit) {
					t.Errorf("run %d: no hit; the key was not stored again:\n%s", i, p.String())
				}
			}
			if ents, _ := os.ReadDir(outside); len(ents) != 0 {
				t.Errorf("written outside the cache: %v", ents)
			}
			if fi, err := os.Lstat(entry); err != nil || !fi.IsDir() {
				t.Errorf("the entry is not a directory again: %v", err)
			}
		})
	}
}

// TestResultCacheReclaimsLitter: a store reclaims what killed stores and
// drops left in results/, and leaves a live store's directory alone.
func TestResultCacheReclaimsLitter(t *testing.T) {
	ctx := context.Background()
	tagSrc, _ := registrySource(t)
	cache, work := t.TempDir(), t.TempDir()
	results := cachedir.ResultsDir(cache)
	os.MkdirAll(filepath.Join(results, ".tmp-dead1"), 0o755)
	os.WriteFile(filepath.Join(results, ".tmp-dead1", RootfsFile), make([]byte, 1<<20), 0o644)
	os.MkdirAll(filepath.Join(results, ".tmp-dead2"), 0o755)
	os.WriteFile(filepath.Join(results, ".tmp-dead2.lock"), nil, 0o644) // its owner died
	os.MkdirAll(filepath.Join(results, ".trash-x", "entry"), 0o755)
	os.WriteFile(filepath.Join(results, ".tmp-orphan.lock"), nil, 0o644)
	os.MkdirAll(filepath.Join(results, ".tmp-live"), 0o755)
	live, err := lock.Try(filepath.Join(results, ".tmp-live.lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer live.Remove()
	if _, err := Run(ctx, cachedOptions(tagSrc, filepath.Join(work, "a"), cache, nil)); err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, n := range entries(t, cache) {
		if strings.HasPrefix(n, ".") {
			left = append(left, n)
		}
	}
	if strings.Join(left, " ") != ".tmp-live .tmp-live.lock" {
		t.Errorf("left in results/: %v, want only the live store's", left)
	}
}

// TestCacheTrimmedAfterRun: with a small --cache-max, a run leaves the
// cache within it, the least recently used entries gone; an entry it just
// used stays.
func TestCacheTrimmedAfterRun(t *testing.T) {
	ctx := context.Background()
	tagSrc, _ := registrySource(t)
	cache, work := t.TempDir(), t.TempDir()
	// An old, big blob nobody uses.
	old := filepath.Join(cachedir.BlobsDir(cache), strings.Repeat("0", 64))
	os.MkdirAll(filepath.Dir(old), 0o755)
	os.WriteFile(old, make([]byte, 4<<20), 0o644)
	long := time.Now().Add(-24 * time.Hour)
	os.Chtimes(old, long, long)

	var p bytes.Buffer
	o := cachedOptions(tagSrc, filepath.Join(work, "a"), cache, &p)
	o.CacheMax = 3 << 20
	if _, err := Run(ctx, o); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("the least recently used blob is still there:\n%s", p.String())
	}
	if !strings.Contains(p.String(), "least recently used") {
		t.Errorf("progress does not say what was trimmed:\n%s", p.String())
	}
	es, _ := cachedir.List(cache)
	if total := cachedir.Total(es); total > 3<<20 && len(es) > 1 {
		t.Errorf("cache holds %d bytes in %d entries after the run, limit 3 MiB", total, len(es))
	}
	// Unlimited: nothing is removed.
	o = cachedOptions(tagSrc, filepath.Join(work, "b"), cache, nil)
	o.CacheMax = -1
	before, _ := cachedir.List(cache)
	if _, err := Run(ctx, o); err != nil {
		t.Fatal(err)
	}
	if after, _ := cachedir.List(cache); len(after) < len(before) {
		t.Errorf("CacheMax -1 removed entries: %d -> %d", len(before), len(after))
	}
}
