package image

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/testenv"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
	"github.com/docker2vm/docker2vm/internal/testenv/registrytest"
)

// emptyDockerConfig points DOCKER_CONFIG at an empty directory so that the
// host's credentials do not leak into a test.
func emptyDockerConfig(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
}

func TestRegistryAnonymous(t *testing.T) {
	require.Integration(t, "starts a registry")
	emptyDockerConfig(t)
	reg := registrytest.Start(t, registrytest.Options{})
	idx, imgs := multiArchIndex(t, true)
	ref := reg.Push(t, "multi:1", nil, idx)
	single := reg.Push(t, "single:1", imagetest.New(t, imagetest.Spec{Platform: arm64}), nil)
	cache := t.TempDir()
	var progress bytes.Buffer

	img := resolveT(t, KindRegistry, ref, Options{Platform: arm64, CacheDir: cache, Progress: &progress})
	if d, _ := imgs["arm64"].Digest(); img.Digest != d {
		t.Fatalf("digest %s, want %s", img.Digest, d)
	}
	if id, _ := idx.Digest(); img.IndexDigest == nil || *img.IndexDigest != id {
		t.Errorf("IndexDigest %v", img.IndexDigest)
	}
	if files := readFiles(t, img); files["etc/arch"] != "arm64v8\n" {
		t.Errorf("files %v", files)
	}
	if !strings.Contains(progress.String(), "Downloading layer 1/") {
		t.Errorf("progress: %q", progress.String())
	}
	for _, l := range img.Layers {
		if _, err := os.Stat(filepath.Join(cache, "blobs", "sha256", l.Digest.Hex)); err != nil {
			t.Errorf("layer %d not cached: %v", l.Index, err)
		}
	}
	for _, d := range []v1.Hash{img.Digest, *img.IndexDigest, img.ConfigDigest} {
		if _, err := os.Stat(filepath.Join(cache, "blobs", "sha256", d.Hex)); err != nil {
			t.Errorf("%s not cached: %v", d, err)
		}
	}
	// Second run: served from the cache.
	progress.Reset()
	img2 := resolveT(t, KindRegistry, ref, Options{Platform: arm64, CacheDir: cache, Progress: &progress})
	readFiles(t, img2)
	if strings.Contains(progress.String(), "Downloading") || !strings.Contains(progress.String(), "Using cached layer 1/2") {
		t.Errorf("second run progress: %q", progress.String())
	}
	// By digest, and without the cache.
	img3 := resolveT(t, KindRegistry, reg.Ref("multi@"+img.IndexDigest.String()), Options{Platform: amd64, NoCache: true})
	if d, _ := imgs["amd64"].Digest(); img3.Digest != d {
		t.Errorf("by digest: %s", img3.Digest)
	}
	readFiles(t, img3)

	t.Run("single-platform mismatch", func(t *testing.T) {
		_, err := Resolve(context.Background(), Source{Kind: KindRegistry, Ref: single}, Options{Platform: amd64, NoCache: true})
		testenv.WantErr(t, err, "image is linux/arm64 but --platform is linux/amd64")
	})
	t.Run("not found", func(t *testing.T) {
		_, err := Resolve(context.Background(), Source{Kind: KindRegistry, Ref: reg.Ref("nope:1")}, Options{Platform: amd64, NoCache: true})
		testenv.WantErr(t, err, "not found")
		if !strings.Contains(strings.Join(hint.Of(err), "\n"), "Check the repository name") {
			t.Errorf("hints %q", strings.Join(hint.Of(err), "\n"))
		}
	})
	t.Run("tag not found lists the tags", func(t *testing.T) {
		_, err := Resolve(context.Background(), Source{Kind: KindRegistry, Ref: single[:strings.LastIndex(single, ":")] + ":no-such-tag"}, Options{Platform: amd64, NoCache: true})
		testenv.WantErr(t, err, `tag "no-such-tag" is not in`)
		if h := strings.Join(hint.Of(err), "\n"); !strings.Contains(h, "has the tags: "+single[strings.LastIndex(single, ":")+1:]) || !strings.Contains(h, "Check the repository name") {
			t.Errorf("hints %q", h)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		_, err := Resolve(context.Background(), Source{Kind: KindRegistry, Ref: "127.0.0.1:1/app:1"}, Options{Platform: amd64, NoCache: true})
		testenv.WantErr(t, err, "cannot connect to registry 127.0.0.1:1")
		if !strings.Contains(strings.Join(hint.Of(err), "\n"), "listening at 127.0.0.1:1") {
			t.Errorf("hints %q", strings.Join(hint.Of(err), "\n"))
		}
	})
}

func TestRegistryBasicAuth(t *testing.T) {
	require.Integration(t, "starts a registry")
	reg := registrytest.Start(t, registrytest.Options{Username: "alice", Password: "s3cret"})
	ref := reg.Push(t, "private/app:1", imagetest.New(t, imagetest.Spec{}), nil)

	emptyDockerConfig(t)
	_, err := Resolve(context.Background(), Source{Kind: KindRegistry, Ref: ref}, Options{Platform: amd64, NoCache: true})
	testenv.WantErr(t, err, "access to "+reg.Host+"/private/app denied (HTTP 401)")
	if h := strings.Join(hint.Of(err), "\n"); !strings.Contains(h, "docker login "+reg.Host) || !strings.Contains(h, "DOCKER_CONFIG") {
		t.Errorf("hints %q", h)
	}

	reg.DockerConfig(t) // DOCKER_CONFIG with an "auths" entry
	img := resolveT(t, KindRegistry, ref, Options{Platform: amd64})
	if files := readFiles(t, img); files["bin/hello"] == "" {
		t.Errorf("files %v", files)
	}
	// An explicit keychain works as well.
	img = resolveT(t, KindRegistry, ref, Options{Platform: amd64, NoCache: true, Keychain: authn.DefaultKeychain})
	readFiles(t, img)
}

func TestRegistryTampered(t *testing.T) {
	require.Integration(t, "starts a registry")
	emptyDockerConfig(t)
	reg := registrytest.Start(t, registrytest.Options{})
	src := imagetest.New(t, imagetest.Spec{OCI: true})
	l1 := layerDigest(t, src, 1)
	mdig, _ := src.Digest()

	t.Run("layer", func(t *testing.T) {
		ref := reg.Push(t, "tamper-layer:1", src, nil)
		flip(t, reg.BlobPath(l1.Hex), 20)
		for _, noCache := range []bool{true, false} {
			cache := t.TempDir()
			img := resolveT(t, KindRegistry, ref, Options{Platform: amd64, NoCache: noCache, CacheDir: cache})
			_, err := tryReadFiles(context.Background(), img)
			testenv.WantErr(t, err, "layer 2/2 "+l1.String(), "digest mismatch")
			if _, err := os.Stat(filepath.Join(cache, "blobs", "sha256", l1.Hex)); !os.IsNotExist(err) {
				t.Errorf("tampered layer entered the cache: %v", err)
			}
		}
		flip(t, reg.BlobPath(l1.Hex), 20) // restore
	})
	t.Run("manifest", func(t *testing.T) {
		ref := reg.Push(t, "tamper-manifest:1", src, nil)
		// Change one hex digit of a layer digest inside the manifest: the
		// registry still serves it (flipping a byte of the media type
		// makes the registry itself fail with HTTP 500).
		mp := reg.BlobPath(mdig.Hex)
		orig, _ := os.ReadFile(mp)
		i := bytes.Index(orig, []byte(l1.Hex))
		if i < 0 {
			t.Fatal("layer digest not in manifest")
		}
		tampered := append([]byte{}, orig...)
		tampered[i] = map[bool]byte{true: '1', false: '0'}[tampered[i] == '0']
		os.WriteFile(mp, tampered, 0o644)
		defer os.WriteFile(mp, orig, 0o644)
		_, err := Resolve(context.Background(), Source{Kind: KindRegistry, Ref: ref}, Options{Platform: amd64, NoCache: true})
		testenv.WantErr(t, err, "manifest "+mdig.String(), "digest mismatch")
	})
	t.Run("corrupt cache entry refetched", func(t *testing.T) {
		ref := reg.Push(t, "cache:1", src, nil)
		cache := t.TempDir()
		img := resolveT(t, KindRegistry, ref, Options{Platform: amd64, CacheDir: cache})
		want := readFiles(t, img)
		entry := filepath.Join(cache, "blobs", "sha256", l1.Hex)
		good, _ := os.ReadFile(entry)
		flip(t, entry, 10)
		var progress bytes.Buffer
		img = resolveT(t, KindRegistry, ref, Options{Platform: amd64, CacheDir: cache, Progress: &progress})
		got := readFiles(t, img)
		if got["bin/hello"] != want["bin/hello"] {
			t.Errorf("refetched content differs")
		}
		if !strings.Contains(progress.String(), "Downloading layer 2/2") || !strings.Contains(progress.String(), "Using cached layer 1/2") {
			t.Errorf("progress %q", progress.String())
		}
		if b, _ := os.ReadFile(entry); !bytes.Equal(b, good) {
			t.Error("cache entry not repaired")
		}
	})
}
