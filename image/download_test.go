package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker2vm/docker2vm/image/internal/blob"
	"github.com/docker2vm/docker2vm/image/internal/registry"
	"github.com/docker2vm/docker2vm/internal/faultproxy"
	"github.com/docker2vm/docker2vm/internal/testenv"
)

// waitFor polls cond for up to 20s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestParallelDownloadFaults: faults on a layer that is downloaded (spooled)
// while an earlier one is read. Transfer failures are retried and resumed
// as with one download at a time; a failure for good, or wrong bytes, fails
// the layer being read at once, naming the layer that failed; nothing
// wrong or partial is left in the cache.
func TestParallelDownloadFaults(t *testing.T) {
	f := newFaultFixture(t)
	l2 := f.layers[2]
	l2Path := blobPath(l2.Digest)
	what2 := "layer 3/3 " + l2.Digest.String()
	gets := func() []faultproxy.Request { return f.gets(l2.Digest) }
	tests := []struct {
		name    string
		rules   []faultproxy.Rule
		retries int
		gets    int // GETs of layer 3 the fault takes before it is over
		wantErr []string
		errIs   error
	}{
		{name: "drop resumes with Range",
			rules:   []faultproxy.Rule{{Method: "GET", Path: l2Path, Attempts: []int{1}, Action: faultproxy.Drop, After: 200_000}},
			retries: 5, gets: 2},
		{name: "5xx then success",
			rules:   []faultproxy.Rule{{Method: "GET", Path: l2Path, Attempts: []int{1}, Action: faultproxy.Status, Code: 502}},
			retries: 5, gets: 2},
		{name: "5xx on every attempt",
			rules:   []faultproxy.Rule{{Method: "GET", Path: l2Path, Action: faultproxy.Status, Code: 500}},
			retries: 1, gets: 2,
			wantErr: []string{what2, "registry " + f.proxy.Host, "after 2 attempts", "HTTP 500"}, errIs: ErrNetwork},
		{name: "wrong bytes",
			rules:   []faultproxy.Rule{{Method: "GET", Path: l2Path, Action: faultproxy.Corrupt, After: 1000}},
			retries: 5, gets: 1,
			wantErr: []string{what2, "digest mismatch"}, errIs: ErrDigestMismatch},
		{name: "stall on every attempt",
			rules:   []faultproxy.Rule{{Method: "GET", Path: l2Path, Action: faultproxy.Stall, After: 100_000}},
			retries: 0, gets: 1,
			wantErr: []string{what2, "registry " + f.proxy.Host, "no data for 1s", "after 1 attempts"}, errIs: ErrNetwork},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cache := t.TempDir()
			opts := faultOptions(cache, tc.retries, nil)
			opts.ParallelDownloads = 3
			ctx := context.Background()
			img := f.resolve(t, opts, tc.rules...)
			// Open layer 1 and read a little of it; layer 3 is being
			// downloaded meanwhile: wait until its fault is over.
			// (A fault quick to fail may fail the opening already.)
			rc, herr := img.OpenLayer(ctx, 0)
			if herr == nil {
				_, herr = tar.NewReader(rc).Next()
			} else {
				rc = io.NopCloser(strings.NewReader(""))
			}
			if herr != nil && tc.wantErr == nil {
				t.Fatal(herr)
			}
			fe := img.store.(*registry.Store)
			waitFor(t, "the fault on layer 3", func() bool {
				if tc.wantErr != nil {
					return fe.DownloadFailed() != nil
				}
				return len(gets()) >= tc.gets && cached(cache, l2.Digest)
			})
			if tc.wantErr != nil {
				// The layer being read fails now, with layer 3's error
				// (unless it was read ahead to its end already: then
				// the next layer fails to open).
				_, err := io.Copy(io.Discard, rc)
				cerr := rc.Close()
				if herr != nil {
					err = herr
				}
				if err == nil {
					err = cerr
				}
				if err == nil {
					_, err = img.OpenLayer(ctx, 1)
				}
				t.Logf("error: %v", err)
				testenv.WantErr(t, err, tc.wantErr...)
				if !errors.Is(err, tc.errIs) {
					t.Errorf("error %q is not %v", err, tc.errIs)
				}
				if tc.errIs == ErrNetwork && errors.Is(err, blob.ErrDigestMismatch) {
					t.Errorf("a transfer failure is reported as corruption: %v", err)
				}
				if _, err := img.OpenLayer(ctx, 2); err == nil {
					t.Error("a layer opened after the failure")
				}
				img.Close()
				if cached(cache, l2.Digest) {
					t.Error("the failed layer is in the cache")
				}
				if n := len(gets()); n != tc.gets {
					t.Errorf("%d GETs of layer 3, want %d", n, tc.gets)
				}
				assertCacheTrusted(t, cache)
				return
			}
			rc.Close()
			files, err := tryReadFiles(ctx, img)
			if err != nil {
				t.Fatal(err)
			}
			for name, want := range f.files {
				if files[name] != want {
					t.Fatalf("%s differs", name)
				}
			}
			g := gets()
			if len(g) != tc.gets {
				t.Errorf("%d GETs of layer 3, want %d", len(g), tc.gets)
			}
			if tc.name == "drop resumes with Range" && (g[1].Range == "" || g[1].Status != 206) {
				t.Errorf("the retry did not resume with a Range request: %+v", g)
			}
			img.Close()
			assertCacheTrusted(t, cache)
		})
	}
}

// TestParallelDownloadsCancel: cancelling the run stops every download at
// once, stalled ones included, and leaves no temporary file, in the cache
// or (--no-cache) elsewhere.
func TestParallelDownloadsCancel(t *testing.T) {
	f := newFaultFixture(t)
	for _, run := range []struct {
		noCache bool
		segment int64
	}{{false, 0}, {true, 0}, {false, 128 << 10}, {true, 128 << 10}} {
		noCache := run.noCache
		tmp := t.TempDir()
		t.Setenv("TMPDIR", tmp)
		stall := []faultproxy.Rule{
			{Method: "GET", Path: blobPath(f.layers[1].Digest), Action: faultproxy.Stall, After: 100_000},
			{Method: "GET", Path: blobPath(f.layers[2].Digest), Action: faultproxy.Stall, After: 100_000},
		}
		if err := f.proxy.SetRules(stall...); err != nil {
			t.Fatal(err)
		}
		cache := t.TempDir()
		opts := faultOptions(cache, 5, nil)
		opts.StallTimeout = time.Minute
		opts.ParallelDownloads = 3
		opts.NoCache = noCache
		opts.segmentSize = run.segment
		ctx, cancel := context.WithCancel(context.Background())
		img, err := Resolve(ctx, Source{Kind: KindRegistry, Ref: f.ref}, opts)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := img.OpenLayer(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		// One request per layer: layers 2 and 3 stall side by side. In
		// segments: layer 2's first three take the three connections.
		downloading := 2
		waitFor(t, "the stalls", func() bool {
			if run.segment > 0 {
				downloading = 1
				return f.proxy.BodyBytes(blobPath(f.layers[1].Digest)) >= 3*100_000
			}
			return f.proxy.BodyBytes(blobPath(f.layers[1].Digest)) >= 100_000 && f.proxy.BodyBytes(blobPath(f.layers[2].Digest)) >= 100_000
		})
		if !noCache {
			if tmps, _ := filepath.Glob(filepath.Join(cache, "blobs", "sha256", registry.TempPrefix+"*")); len(tmps) != downloading {
				t.Errorf("%d temporary files while %d layers download", len(tmps), downloading)
			}
		}
		start := time.Now()
		cancel()
		if _, err := io.Copy(io.Discard, rc); err == nil {
			t.Error("reading went on after the cancel")
		}
		rc.Close()
		img.Close()
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("stopping took %s", d)
		}
		if tmps, _ := filepath.Glob(filepath.Join(cache, "blobs", "sha256", registry.TempPrefix+"*")); len(tmps) != 0 {
			t.Errorf("temporary files left in the cache: %v", tmps)
		}
		if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
			t.Errorf("files left in TMPDIR: %v", ents)
		}
		for _, l := range f.layers[1:] {
			if cached(cache, l.Digest) {
				t.Errorf("stalled layer %s is in the cache", l.Digest)
			}
		}
		f.proxy.SetRules()
	}
}

// TestSegmentedDownloads: a large layer is fetched in segments, one Range
// request each, over several connections, and arrives whole and verified;
// faults on one segment are retried within its range, or fail the run
// naming the layer, and never leave a wrong entry in the cache; a registry
// that ignores Range still gets the right bytes read, and whole-blob
// requests from then on.
func TestSegmentedDownloads(t *testing.T) {
	f := newFaultFixture(t)
	const seg = 256 << 10
	l1, l2 := f.layers[1], f.layers[2]
	bounds := registry.SegmentBounds(l1.Size, 3, seg, seg)
	if len(bounds) < 4 {
		t.Fatalf("layer 2 (%d bytes) in %d segments: the fixture is too small", l1.Size, len(bounds))
	}
	rangeOf := func(k int) string { // segment k's Range header
		start := int64(0)
		if k > 0 {
			start = bounds[k-1]
		}
		if k == len(bounds)-1 {
			return fmt.Sprintf("bytes=%d-", start)
		}
		return fmt.Sprintf("bytes=%d-%d", start, bounds[k]-1)
	}
	what1 := "layer 2/3 " + l1.Digest.String()
	mid := "^" + regexp.QuoteMeta(rangeOf(2)) + "$"
	tests := []struct {
		name    string
		rules   []faultproxy.Rule
		retries int
		check   func(t *testing.T, l1Gets, l2Gets []faultproxy.Request)
		wantErr []string
		errIs   error
	}{
		{name: "clean", retries: 5, check: func(t *testing.T, g, _ []faultproxy.Request) {
			var got []string
			for _, r := range g {
				got = append(got, r.Range)
				if r.Status != 206 {
					t.Errorf("%q answered %d", r.Range, r.Status)
				}
			}
			var want []string
			for k := range bounds {
				want = append(want, rangeOf(k))
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("ranges %q, want %q", got, want)
			}
		}},
		{name: "drop in a segment resumes within it", retries: 5,
			rules: []faultproxy.Rule{{Method: "GET", Path: blobPath(l1.Digest), Range: mid, Action: faultproxy.Drop, After: 50_000}},
			check: func(t *testing.T, g, _ []faultproxy.Request) {
				var resumed bool
				for _, r := range g {
					var start, end, wantStart, wantEnd int64
					fmt.Sscanf(r.Range, "bytes=%d-%d", &start, &end)
					fmt.Sscanf(rangeOf(2), "bytes=%d-%d", &wantStart, &wantEnd)
					if start > wantStart && end == wantEnd && r.Status == 206 {
						resumed = true
					}
				}
				if !resumed || len(g) != len(bounds)+1 {
					t.Errorf("no resume within segment 3 (%s): %+v", rangeOf(2), g)
				}
			}},
		{name: "5xx then success on a segment", retries: 5,
			rules: []faultproxy.Rule{{Method: "GET", Path: blobPath(l1.Digest), Range: mid, Attempts: []int{1, 2, 3, 4}, Action: faultproxy.Status, Code: 503}},
			check: func(t *testing.T, g, _ []faultproxy.Request) {
				if n := len(g); n < len(bounds)+1 {
					t.Errorf("%d requests: the 503 was not retried", n)
				}
			}},
		{name: "registry ignores Range", retries: 5,
			rules: []faultproxy.Rule{{Method: "GET", Action: faultproxy.IgnoreRange}},
			check: func(t *testing.T, g, g2 []faultproxy.Request) {
				// One ranged request learns it; its answer, the whole
				// blob, is the layer's download: no segment asks again.
				if len(g) != 1 || g[0].Range != rangeOf(0) || g[0].Status != 200 {
					t.Errorf("layer 2: %+v, want one request (%s) answered 200", g, rangeOf(0))
				}
				if sent := f.proxy.BodyBytes(blobPath(l1.Digest)); sent != l1.Size {
					t.Errorf("layer 2: %d bytes sent for a blob of %d", sent, l1.Size)
				}
				if len(g2) != 1 || g2[0].Range != "" {
					t.Errorf("layer 3 after Range was ignored: %+v, want one request without Range", g2)
				}
			}},
		{name: "registry answers a shifted Content-Range", retries: 5,
			rules: []faultproxy.Rule{{Method: "GET", Path: blobPath(l1.Digest), Range: "^bytes=0-", Action: faultproxy.ShiftRange}},
			check: func(t *testing.T, g, g2 []faultproxy.Request) {
				if len(g) != 2 || g[0].Range != rangeOf(0) || g[1].Range != "" || g[1].Status != 200 {
					t.Errorf("layer 2: %+v, want the first segment's request, then the whole blob", g)
				}
				if len(g2) != 1 || g2[0].Range != "" {
					t.Errorf("layer 3 after a wrong Content-Range: %+v, want one request without Range", g2)
				}
			}},
		{name: "wrong bytes in a segment",
			rules:   []faultproxy.Rule{{Method: "GET", Path: blobPath(l1.Digest), Range: mid, Action: faultproxy.Corrupt, After: 1000}},
			retries: 5, wantErr: []string{what1, "digest mismatch"}, errIs: ErrDigestMismatch},
		{name: "5xx for good on a segment",
			rules:   []faultproxy.Rule{{Method: "GET", Path: blobPath(l1.Digest), Range: mid, Action: faultproxy.Status, Code: 500}},
			retries: 1, wantErr: []string{what1, "registry " + f.proxy.Host, "after 2 attempts", "HTTP 500"}, errIs: ErrNetwork},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cache := t.TempDir()
			opts := faultOptions(cache, tc.retries, nil)
			opts.ParallelDownloads = 3
			opts.segmentSize = seg
			ctx := context.Background()
			img := f.resolve(t, opts, tc.rules...)
			files, err := tryReadFiles(ctx, img)
			img.Close()
			if tc.wantErr != nil {
				testenv.WantErr(t, err, tc.wantErr...)
				if !errors.Is(err, tc.errIs) {
					t.Errorf("error %q is not %v", err, tc.errIs)
				}
				if cached(cache, l1.Digest) {
					t.Error("the failed layer is in the cache")
				}
				assertCacheTrusted(t, cache)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for name, want := range f.files {
				if files[name] != want {
					t.Fatalf("%s differs", name)
				}
			}
			if !cached(cache, l1.Digest) || !cached(cache, l2.Digest) {
				t.Error("downloaded layers are not in the cache")
			}
			assertCacheTrusted(t, cache)
			tc.check(t, f.gets(l1.Digest), f.gets(l2.Digest))
		})
	}
}
