package convert

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/docker2vm/docker2vm/image"
	"github.com/docker2vm/docker2vm/internal/diskio"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
	"github.com/docker2vm/docker2vm/internal/testtar"
)

// TestKilledRuns kills conversions (SIGKILL, no chance to clean up) at
// random moments, again and again, into one --out with one cache, and
// checks after each kill that --out holds a complete output (the previous
// one or the new one, byte for byte what an uninterrupted run writes), and
// at the end that one normal run leaves nothing behind: no staging, no
// lock, no cache temp directories (result or prefix cache), and a result
// cache that still hits.
func TestKilledRuns(t *testing.T) {
	if os.Getenv("DOCKER2VM_KILL_CHILD") != "" {
		killChild(t)
		return
	}
	tagSrc, _ := registrySourceOf(t, bigImage(t))
	cache, work := t.TempDir(), t.TempDir()
	out := filepath.Join(work, "out")
	ref := filepath.Join(t.TempDir(), "ref")
	if _, err := Run(context.Background(), cachedOptions(tagSrc, ref, t.TempDir(), nil)); err != nil {
		t.Fatal(err)
	}
	want := fileSum(t, filepath.Join(ref, RootfsFile))
	wantMeta := metaWithoutSource(t, ref)

	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	published := false
	for i := range 16 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKilledRuns$")
		cmd.Env = append(os.Environ(), "DOCKER2VM_KILL_CHILD=1", "KILL_SRC="+tagSrc.Ref, "KILL_OUT="+out, "KILL_CACHE="+cache)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The first kills land early (resolving, merging); later ones
		// also while the cache is stored and the output published.
		delay := time.Duration(rng.Intn(150+60*i)) * time.Millisecond
		time.Sleep(delay)
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		t.Logf("kill %d after %v: %v", i, delay, err)
		cur := out
		if _, err := os.Stat(out); os.IsNotExist(err) {
			_, _, old := outNames(out)
			switch {
			case !published:
				continue
			case diskio.Impl == "portable" && exists(old):
				// Killed between the two renames of the fallback: the
				// next run restores it (TestRunRecoversInterruptedPublication).
				cur = old
			default:
				t.Fatalf("kill %d: --out is missing after it was published once", i)
			}
		}
		published = true
		if got := fileSum(t, filepath.Join(cur, RootfsFile)); got != want {
			t.Fatalf("kill %d: --out holds a rootfs.ext4 that is not the complete one", i)
		}
		if got := metaWithoutSource(t, cur); got != wantMeta {
			t.Fatalf("kill %d: meta.json differs:\n%s\nwant\n%s", i, got, wantMeta)
		}
	}
	var p bytes.Buffer
	if _, err := Run(context.Background(), cachedOptions(tagSrc, out, cache, &p)); err != nil {
		t.Fatalf("the run after the kills: %v", err)
	}
	if got := fileSum(t, filepath.Join(out, RootfsFile)); got != want {
		t.Error("the run after the kills wrote another rootfs.ext4")
	}
	assertNoLitter(t, out)
	for _, n := range entries(t, cache) {
		if strings.HasPrefix(n, ".") {
			t.Errorf("left in the result cache: %s", n)
		}
	}
	for _, n := range prefixEntries(t, cache) {
		if strings.HasPrefix(n, ".") {
			t.Errorf("left in the prefix cache: %s", n)
		}
	}
	if len(prefixEntries(t, cache)) != 1 {
		t.Errorf("prefix entries after the kills: %v, want the one after the first three layers", prefixEntries(t, cache))
	}
	// Once more into a new --out: the result cache hits.
	p.Reset()
	if _, err := Run(context.Background(), cachedOptions(tagSrc, filepath.Join(work, "again"), cache, &p)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.String(), anyHit) {
		t.Errorf("no result-cache hit after the kills:\n%s", p.String())
	}
}

// killChild converts in a loop until it is killed.
func killChild(t *testing.T) {
	src := image.Source{Kind: image.KindRegistry, Ref: os.Getenv("KILL_SRC")}
	for {
		if _, err := Run(context.Background(), cachedOptions(src, os.Getenv("KILL_OUT"), os.Getenv("KILL_CACHE"), nil)); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(3)
		}
	}
}

// bigImage is the sample image with a layer of 20,000 small files, so
// that a conversion takes long enough to be killed in the middle.
func bigImage(t *testing.T) v1.Image {
	ents := []testtar.Entry{testtar.Dir("many/")}
	for i := range 20000 {
		ents = append(ents, testtar.File(fmt.Sprintf("many/f%05d", i), strings.Repeat("x", i%300)))
	}
	l := imagetest.NewLayer(t, testtar.Build(t, ents...), imagetest.Gzip, true)
	img, err := mutate.AppendLayers(sampleImage(t), l)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func fileSum(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

// metaWithoutSource is meta.json without what names the output.
func metaWithoutSource(t *testing.T, dir string) string {
	m := readMeta(t, dir)
	m.Source = SourceInfo{}
	b, _ := json.Marshal(m)
	return string(b)
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
