package image

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker2vm/docker2vm/internal/faultproxy"
)

func TestParseParallelDownloads(t *testing.T) {
	for _, s := range []string{"1", "4", " 32 "} {
		if _, err := ParseParallelDownloads(s); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
	for _, s := range []string{"", "0", "-1", "33", "four"} {
		if _, err := ParseParallelDownloads(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
	t.Setenv(ParallelDownloadsEnv, "7")
	if n, err := parallelDownloads(Options{}); n != 7 || err != nil {
		t.Errorf("from the environment: %d %v", n, err)
	}
	if n, err := parallelDownloads(Options{ParallelDownloads: 2}); n != 2 || err != nil {
		t.Errorf("the option wins: %d %v", n, err)
	}
	t.Setenv(ParallelDownloadsEnv, "lots")
	if _, err := parallelDownloads(Options{}); err == nil || !strings.Contains(err.Error(), ParallelDownloadsEnv) {
		t.Errorf("a bad environment value: %v", err)
	}
}

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

// readLayerFiles reads layer i's files into files, as a conversion does
// (Close's verdict first on a broken stream).
func readLayerFiles(ctx context.Context, img *Image, i int, files map[string]string) error {
	rc, err := img.OpenLayer(ctx, i)
	if err != nil {
		return err
	}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if cerr := rc.Close(); cerr != nil {
				return cerr
			}
			return err
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			if cerr := rc.Close(); cerr != nil {
				return cerr
			}
			return err
		}
		files[h.Name] = string(b)
	}
	return rc.Close()
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
	gets := func() []faultproxy.Request {
		var out []faultproxy.Request
		for _, r := range f.proxy.Requests(l2Path) {
			if r.Method == "GET" {
				out = append(out, r)
			}
		}
		return out
	}
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
			if err := f.proxy.SetRules(tc.rules...); err != nil {
				t.Fatal(err)
			}
			cache := t.TempDir()
			opts := faultOptions(cache, tc.retries, nil)
			opts.ParallelDownloads = 3
			ctx := context.Background()
			img, err := Resolve(ctx, Source{Kind: KindRegistry, Ref: f.ref}, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
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
			fe := img.store.(*registryStore).fetch
			waitFor(t, "the fault on layer 3", func() bool {
				if tc.wantErr != nil {
					fe.mu.Lock()
					defer fe.mu.Unlock()
					return fe.failed != nil
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
				wantErr(t, err, tc.wantErr...)
				if !errors.Is(err, tc.errIs) {
					t.Errorf("error %q is not %v", err, tc.errIs)
				}
				if tc.errIs == ErrNetwork && errors.Is(err, ErrDigestMismatch) {
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
			files := map[string]string{}
			for i := range f.layers {
				if err := readLayerFiles(ctx, img, i, files); err != nil {
					t.Fatalf("layer %d: %v", i+1, err)
				}
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
	for _, noCache := range []bool{false, true} {
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
		ctx, cancel := context.WithCancel(context.Background())
		img, err := Resolve(ctx, Source{Kind: KindRegistry, Ref: f.ref}, opts)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := img.OpenLayer(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "both stalls", func() bool {
			return f.proxy.BodyBytes(blobPath(f.layers[1].Digest)) >= 100_000 && f.proxy.BodyBytes(blobPath(f.layers[2].Digest)) >= 100_000
		})
		if !noCache {
			if tmps, _ := filepath.Glob(filepath.Join(cache, "blobs", "sha256", tmpPrefix+"*")); len(tmps) != 2 {
				t.Errorf("%d temporary files while two layers download, want 2", len(tmps))
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
		if tmps, _ := filepath.Glob(filepath.Join(cache, "blobs", "sha256", tmpPrefix+"*")); len(tmps) != 0 {
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
