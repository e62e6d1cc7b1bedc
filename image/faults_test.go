package image

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/image/internal/registry"
	"github.com/docker2vm/docker2vm/internal/faultproxy"
	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/testenv"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
	"github.com/docker2vm/docker2vm/internal/testenv/registrytest"
	"github.com/docker2vm/docker2vm/internal/testtar"
)

// faultFixture is a real registry holding an image of three layers, with a
// fault-injecting proxy in front of it.
type faultFixture struct {
	reg    *registrytest.Server
	proxy  *faultproxy.Proxy
	ref    string // the image, through the proxy
	layers []v1.Descriptor
	config v1.Hash
	files  map[string]string
}

func newFaultFixture(t *testing.T) *faultFixture {
	t.Helper()
	require.Integration(t, "starts a registry")
	emptyDockerConfig(t)
	reg := registrytest.Start(t, registrytest.Options{})
	f := &faultFixture{reg: reg, files: map[string]string{}}
	var layers []v1.Layer
	for i, size := range []int{384 << 10, 1536 << 10, 640 << 10} {
		name := []string{"a.bin", "b.bin", "c.bin"}[i]
		content := string(testtar.Incompressible(byte(i+1), size))
		f.files[name] = content
		layers = append(layers, imagetest.NewLayer(t, testtar.Build(t, testtar.File(name, content)), imagetest.Gzip, true))
	}
	img := imagetest.New(t, imagetest.Spec{OCI: true, Layers: layers})
	reg.Push(t, "faults/app:1", img, nil)
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	f.layers, f.config = m.Layers, m.Config.Digest
	f.proxy = faultproxy.Start(t, "http://"+reg.Host)
	f.ref = f.proxy.Host + "/faults/app:1"
	return f
}

// resolve sets the proxy's rules and resolves the fixture's image; it is
// closed when the test ends.
func (f *faultFixture) resolve(t *testing.T, opts Options, rules ...faultproxy.Rule) *Image {
	t.Helper()
	if err := f.proxy.SetRules(rules...); err != nil {
		t.Fatal(err)
	}
	return resolveT(t, KindRegistry, f.ref, opts)
}

// gets are the GET requests of blob d the proxy saw.
func (f *faultFixture) gets(d v1.Hash) []faultproxy.Request {
	var out []faultproxy.Request
	for _, r := range f.proxy.Requests(blobPath(d)) {
		if r.Method == "GET" {
			out = append(out, r)
		}
	}
	return out
}

// blobPath is the proxy path pattern of a blob.
func blobPath(d v1.Hash) string { return "/blobs/" + regexp.QuoteMeta(d.String()) + "$" }

// faultOptions are quick to give up: a 1s stall timeout and short waits.
// Layers are downloaded one at a time (still ahead of the reader), so that
// what each fault leaves behind is known; TestParallelDownloadFaults runs
// several at once.
func faultOptions(cache string, retries int, progress *bytes.Buffer) Options {
	o := Options{
		Platform: amd64, CacheDir: cache,
		StallTimeout: time.Second, ParallelDownloads: 1,
		retry: &registry.Policy{Retries: retries, Backoff: 20 * time.Millisecond, MaxWait: 100 * time.Millisecond, MaxRetryAfter: 10 * time.Second},
	}
	if progress != nil {
		o.Progress = progress
	}
	return o
}

// fetchAll resolves the image and reads every layer, as a conversion does.
func (f *faultFixture) fetchAll(ctx context.Context, opts Options) (map[string]string, error) {
	img, err := Resolve(ctx, Source{Kind: KindRegistry, Ref: f.ref}, opts)
	if err != nil {
		return nil, err
	}
	defer img.Close()
	return tryReadFiles(ctx, img)
}

// assertCacheTrusted checks that every entry of the blob cache holds the
// bytes its name promises and that no temporary file is left.
func assertCacheTrusted(t *testing.T, cache string) {
	t.Helper()
	dir := filepath.Join(cache, "blobs", "sha256")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), registry.TempPrefix) {
			t.Errorf("temporary file left in the cache: %s", e.Name())
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Errorf("cache entry %s: %v", e.Name(), err)
			continue
		}
		if s := sha256.Sum256(b); hex.EncodeToString(s[:]) != e.Name() {
			t.Errorf("cache entry %s holds other bytes (%d bytes)", e.Name(), len(b))
		}
	}
}

func cached(cache string, d v1.Hash) bool {
	_, err := os.Lstat(filepath.Join(cache, "blobs", "sha256", d.Hex))
	return err == nil
}

func TestRegistryFaults(t *testing.T) {
	f := newFaultFixture(t)
	l1 := f.layers[1]
	l1Path := blobPath(l1.Digest)
	what1 := "layer 2/3 " + l1.Digest.String()

	gets := func() []faultproxy.Request { return f.gets(l1.Digest) }
	// resumedOnce: the blob was asked for twice, the second time from
	// where the first stopped, and about one blob's worth was sent.
	resumedOnce := func(t *testing.T) {
		reqs := gets()
		if len(reqs) != 2 {
			t.Fatalf("%d GETs of layer 1, want 2: %+v", len(reqs), reqs)
		}
		if reqs[0].Range != "" || !strings.HasPrefix(reqs[1].Range, "bytes=") || reqs[1].Range == "bytes=0-" || reqs[1].Status != 206 {
			t.Errorf("the retry did not resume with a Range request: %+v", reqs)
		}
		if sent := f.proxy.BodyBytes(l1Path); sent < l1.Size || sent > l1.Size+l1.Size/10 {
			t.Errorf("%d bytes sent for layer 1 (%d bytes): not about one blob", sent, l1.Size)
		}
	}

	tests := []struct {
		name    string
		rules   []faultproxy.Rule
		retries int
		// wantErr: substrings of the error; nil: the run succeeds.
		wantErr []string
		errIs   error
		check   func(t *testing.T, err error, progress string, elapsed time.Duration)
	}{
		{
			name:    "drop mid-blob resumes with Range",
			rules:   []faultproxy.Rule{{Method: "GET", Path: l1Path, Attempts: []int{1}, Action: faultproxy.Drop, After: 300_000}},
			retries: 5,
			check: func(t *testing.T, err error, progress string, _ time.Duration) {
				resumedOnce(t)
				if !strings.Contains(progress, "Retrying "+what1) || !strings.Contains(progress, "dropped after") {
					t.Errorf("progress does not tell of the retry: %q", progress)
				}
			},
		},
		{
			name:    "reset mid-blob resumes with Range",
			rules:   []faultproxy.Rule{{Method: "GET", Path: l1Path, Attempts: []int{1}, Action: faultproxy.Drop, After: 300_000, Reset: true}},
			retries: 5,
			check:   func(t *testing.T, _ error, _ string, _ time.Duration) { resumedOnce(t) },
		},
		{
			name: "drop without Range support restarts from the start",
			rules: []faultproxy.Rule{
				{Method: "GET", Path: l1Path, Attempts: []int{1}, Action: faultproxy.Drop, After: 300_000},
				{Method: "GET", Path: l1Path, Action: faultproxy.IgnoreRange},
			},
			retries: 5,
			check: func(t *testing.T, _ error, progress string, _ time.Duration) {
				reqs := gets()
				if len(reqs) != 2 || reqs[1].Status != 200 || reqs[1].Range == "" {
					t.Fatalf("want a Range request answered 200: %+v", reqs)
				}
				if sent := f.proxy.BodyBytes(l1Path); sent < 300_000+l1.Size {
					t.Errorf("%d bytes sent: the blob was not read again from its start", sent)
				}
				if !strings.Contains(progress, "ignored the range request") {
					t.Errorf("progress %q", progress)
				}
			},
		},
		{
			name:    "drop before the headers is retried",
			rules:   []faultproxy.Rule{{Method: "GET", Path: l1Path, Attempts: []int{1}, Action: faultproxy.Drop, After: -1}},
			retries: 5,
		},
		{
			name:    "5xx then success",
			rules:   []faultproxy.Rule{{Method: "GET", Path: l1Path, Attempts: []int{1, 2}, Action: faultproxy.Status, Code: 503}},
			retries: 5,
			check: func(t *testing.T, _ error, _ string, _ time.Duration) {
				if n := len(gets()); n != 3 {
					t.Errorf("%d GETs of layer 1, want 3", n)
				}
			},
		},
		{
			name:    "429 waits for Retry-After",
			rules:   []faultproxy.Rule{{Method: "GET", Path: l1Path, Attempts: []int{1}, Action: faultproxy.Status, Code: 429, RetryAfter: "1"}},
			retries: 5,
			check: func(t *testing.T, _ error, _ string, elapsed time.Duration) {
				if elapsed < time.Second {
					t.Errorf("done in %s: Retry-After: 1 was not honoured", elapsed)
				}
			},
		},
		{
			name:    "5xx on every attempt",
			rules:   []faultproxy.Rule{{Method: "GET", Path: l1Path, Action: faultproxy.Status, Code: 500}},
			retries: 2,
			wantErr: []string{what1, "registry " + f.proxy.Host, "after 3 attempts", "HTTP 500"},
			errIs:   ErrNetwork,
			check: func(t *testing.T, err error, _ string, _ time.Duration) {
				if h := strings.Join(hint.Of(err), "\n"); !strings.Contains(h, "try again later") || strings.Contains(h, "Check the network") {
					t.Errorf("hints %q", h)
				}
			},
		},
		{
			name:    "drop on every attempt",
			rules:   []faultproxy.Rule{{Method: "GET", Path: l1Path, Action: faultproxy.Drop, After: 100_000}},
			retries: 2,
			wantErr: []string{what1, "registry " + f.proxy.Host, "after 3 attempts", "connection was dropped after"},
			errIs:   ErrNetwork,
			check: func(t *testing.T, err error, _ string, _ time.Duration) {
				h := strings.Join(hint.Of(err), "\n")
				if !strings.Contains(h, "Check the network") || !strings.Contains(h, "run again") || !strings.Contains(h, "downloaded completely are kept") {
					t.Errorf("hints %q", h)
				}
				// Each attempt resumed where the last one stopped.
				for i, r := range gets() {
					if (i == 0) != (r.Range == "") {
						t.Errorf("GET %d of layer 1: Range %q", i+1, r.Range)
					}
				}
			},
		},
		{
			name:    "wrong bytes are corruption, never retried",
			rules:   []faultproxy.Rule{{Method: "GET", Path: l1Path, Action: faultproxy.Corrupt, After: 1000}},
			retries: 5,
			wantErr: []string{what1, "digest mismatch"},
			errIs:   ErrDigestMismatch,
		},
		{
			name:    "wrong bytes once are still corruption",
			rules:   []faultproxy.Rule{{Method: "GET", Path: l1Path, Attempts: []int{1}, Action: faultproxy.Corrupt, After: 200_000}},
			retries: 5,
			wantErr: []string{what1, "digest mismatch"},
			errIs:   ErrDigestMismatch,
		},
		{
			name: "wrong bytes after a resume are corruption",
			rules: []faultproxy.Rule{
				{Method: "GET", Path: l1Path, Attempts: []int{1}, Action: faultproxy.Drop, After: 300_000},
				{Method: "GET", Path: l1Path, Attempts: []int{2}, Action: faultproxy.Corrupt, After: 5000},
			},
			retries: 5,
			wantErr: []string{what1, "digest mismatch"},
			errIs:   ErrDigestMismatch,
		},
		{
			name:    "stall mid-blob resumes",
			rules:   []faultproxy.Rule{{Method: "GET", Path: l1Path, Attempts: []int{1}, Action: faultproxy.Stall, After: 200_000}},
			retries: 5,
			check: func(t *testing.T, _ error, progress string, elapsed time.Duration) {
				resumedOnce(t)
				if elapsed < time.Second || !strings.Contains(progress, "no data for 1s") {
					t.Errorf("after %s, progress %q", elapsed, progress)
				}
			},
		},
		{
			name:    "stall on every attempt",
			rules:   []faultproxy.Rule{{Method: "GET", Path: l1Path, Action: faultproxy.Stall, After: 200_000}},
			retries: 2,
			wantErr: []string{what1, "registry " + f.proxy.Host, "after 3 attempts", "no data for 1s"},
			errIs:   ErrNetwork,
			check: func(t *testing.T, err error, _ string, elapsed time.Duration) {
				// Three attempts of 1s, not the default minute; generous
				// bounds for a loaded machine.
				if elapsed < 3*time.Second || elapsed > 40*time.Second {
					t.Errorf("gave up after %s", elapsed)
				}
				if h := strings.Join(hint.Of(err), "\n"); !strings.Contains(h, "--stall-timeout") || !strings.Contains(h, StallTimeoutEnv) {
					t.Errorf("hints %q", h)
				}
			},
		},
		{
			name:    "stall before the headers on every attempt",
			rules:   []faultproxy.Rule{{Method: "HEAD", Path: "/manifests/", Action: faultproxy.Stall, After: -1}},
			retries: 1,
			wantErr: []string{"manifest " + f.ref, "registry " + f.proxy.Host, "after 2 attempts", "no data for 1s (waiting for the response)"},
			errIs:   ErrNetwork,
		},
		{
			name: "dropped manifest requests are retried",
			rules: []faultproxy.Rule{
				{Method: "HEAD", Path: "/manifests/", Attempts: []int{1}, Action: faultproxy.Drop, After: -1},
				{Method: "GET", Path: "/manifests/", Attempts: []int{1}, Action: faultproxy.Drop, After: 100},
			},
			retries: 5,
			check: func(t *testing.T, _ error, _ string, _ time.Duration) {
				if n := len(f.proxy.Requests("/manifests/")); n != 4 {
					t.Errorf("%d manifest requests, want 4 (HEAD and GET, twice each)", n)
				}
			},
		},
		{
			name:    "dropped first contact is retried",
			rules:   []faultproxy.Rule{{Method: "GET", Path: "^/v2/$", Attempts: []int{1}, Action: faultproxy.Drop, After: -1}},
			retries: 5,
			check: func(t *testing.T, _ error, _ string, _ time.Duration) {
				if n := len(f.proxy.Requests("^/v2/$")); n != 2 {
					t.Errorf("%d GET /v2/, want 2", n)
				}
			},
		},
		{
			name:    "dropped config is retried",
			rules:   []faultproxy.Rule{{Method: "GET", Path: blobPath(f.config), Attempts: []int{1}, Action: faultproxy.Drop, After: 10}},
			retries: 5,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := f.proxy.SetRules(tc.rules...); err != nil {
				t.Fatal(err)
			}
			cache := t.TempDir()
			var progress bytes.Buffer
			start := time.Now()
			files, err := f.fetchAll(context.Background(), faultOptions(cache, tc.retries, &progress))
			elapsed := time.Since(start)
			t.Logf("after %s: error %v\nhints: %q\nprogress:\n%s", elapsed.Round(time.Millisecond), err, strings.Join(hint.Of(err), "\n"), progress.String())
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("%v\nprogress:\n%s", err, progress.String())
				}
				for name, want := range f.files {
					if files[name] != want {
						t.Fatalf("%s differs", name)
					}
				}
			} else {
				testenv.WantErr(t, err, tc.wantErr...)
				if !errors.Is(err, tc.errIs) {
					t.Errorf("error %q is not %v", err, tc.errIs)
				}
				if tc.errIs == ErrNetwork && (errors.Is(err, ErrDigestMismatch) || strings.Contains(err.Error(), "tampered")) {
					t.Errorf("a transfer failure is reported as corruption: %v", err)
				}
				if tc.errIs == ErrDigestMismatch && len(gets()) > 2 {
					t.Errorf("corruption was retried: %d GETs of layer 1", len(gets()))
				}
				if cached(cache, l1.Digest) {
					t.Error("the failed layer is in the cache")
				}
			}
			if tc.check != nil {
				tc.check(t, err, progress.String(), elapsed)
			}
			assertCacheTrusted(t, cache)

			// A later run without faults, on the same cache, gets the image
			// right and downloads only what is missing.
			var kept []v1.Descriptor
			for _, l := range f.layers {
				if cached(cache, l.Digest) {
					kept = append(kept, l)
				}
			}
			if tc.wantErr != nil && tc.wantErr[0] == what1 && !cached(cache, f.layers[0].Digest) {
				t.Error("layer 0, downloaded before the failure, is not in the cache")
			}
			f.proxy.SetRules()
			files, err = f.fetchAll(context.Background(), faultOptions(cache, 0, nil))
			if err != nil {
				t.Fatalf("the run after the fault: %v", err)
			}
			for name, want := range f.files {
				if files[name] != want {
					t.Fatalf("the run after the fault: %s differs", name)
				}
			}
			for _, l := range kept {
				if len(f.gets(l.Digest)) > 0 {
					t.Errorf("layer %s was cached yet downloaded again", l.Digest)
				}
			}
			assertCacheTrusted(t, cache)
		})
	}
}

// TestRegistryMaxLayers: the layer count is refused on the manifest, before
// any blob (config included) is downloaded.
func TestRegistryMaxLayers(t *testing.T) {
	f := newFaultFixture(t)
	opts := faultOptions(t.TempDir(), 0, nil)
	opts.MaxLayers = 2
	_, err := Resolve(context.Background(), Source{Kind: KindRegistry, Ref: f.ref}, opts)
	testenv.WantErr(t, err, "has 3 layers, more than the limit of 2")
	if h := strings.Join(hint.Of(err), "\n"); !strings.Contains(h, "--max-layers 3") {
		t.Errorf("hints %q", h)
	}
	if reqs := f.proxy.Requests("/blobs/"); len(reqs) != 0 {
		t.Errorf("blobs were downloaded: %+v", reqs)
	}
	opts.MaxLayers = 3
	if _, err := f.fetchAll(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
}

// TestEarlyStopThroughRegistry: a consumer that stops at a layer's first
// header (a size limit, as a decompression bomb trips) and aborts the
// stream downloads a small part of the layer, not all of it.
func TestEarlyStopThroughRegistry(t *testing.T) {
	require.Integration(t, "starts a registry")
	emptyDockerConfig(t)
	reg := registrytest.Start(t, registrytest.Options{})
	const size = 64 << 20
	content := testtar.Incompressible(9, size)
	layer := imagetest.NewLayer(t, testtar.Build(t, testtar.FileBytes("big", content)), imagetest.Gzip, true)
	img := imagetest.New(t, imagetest.Spec{OCI: true, Layers: []v1.Layer{layer}})
	reg.Push(t, "bomb:1", img, nil)
	d, _ := layer.Digest()
	proxy := faultproxy.Start(t, "http://"+reg.Host)

	for _, run := range []struct {
		noCache  bool
		parallel int // 4: in four segments at once
	}{{true, 1}, {false, 1}, {true, 4}, {false, 4}} {
		noCache := run.noCache
		proxy.SetRules()
		cache := t.TempDir()
		opts := faultOptions(cache, 0, nil)
		opts.NoCache = noCache
		opts.ParallelDownloads = run.parallel
		im, err := Resolve(context.Background(), Source{Kind: KindRegistry, Ref: proxy.Host + "/bomb:1"}, opts)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := im.OpenLayer(context.Background(), 0)
		if err != nil {
			t.Fatal(err)
		}
		h, err := tar.NewReader(rc).Next()
		if err != nil || h.Size != size {
			t.Fatalf("first header: %v %v", h, err)
		}
		// The consumer's limit (say --max-bytes 1M) trips here.
		AbortLayer(rc)
		if err := rc.Close(); err != nil {
			t.Errorf("Close after Abort: %v", err)
		}
		im.Close()
		// The proxy stops counting once its writes fail.
		var sent int64
		for i := 0; i < 100; i++ {
			time.Sleep(50 * time.Millisecond)
			n := proxy.BodyBytes(blobPath(d))
			if n == sent && i > 2 {
				break
			}
			sent = n
		}
		t.Logf("%+v: %d of %d bytes sent", run, sent, len(layer.Raw))
		if sent > int64(len(layer.Raw))/2 {
			t.Errorf("%+v: %d of the layer's %d bytes were downloaded after the stop", run, sent, len(layer.Raw))
		}
		if !noCache {
			assertCacheTrusted(t, cache)
			if cached(cache, d) {
				t.Error("an aborted layer is in the cache")
			}
		}
	}
}
