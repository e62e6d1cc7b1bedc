package image

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/docker2vm/docker2vm/hint"
)

func TestParsePlatforms(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr string
	}{
		{"linux/amd64", []string{"linux/amd64"}, ""},
		{"linux/amd64,linux/arm64", []string{"linux/amd64", "linux/arm64"}, ""},
		{"arm64, amd64", []string{"linux/arm64", "linux/amd64"}, ""},
		{"linux/arm64,arm64", nil, "given twice"},
		{"arm64,linux/arm64/v8", nil, "given twice"},
		{"amd64,x86_64", nil, "given twice"},
		{"linux/amd64,linux/riscv64", nil, `architecture "riscv64" is not supported`},
		{"linux/amd64,", nil, "expected OS/ARCH"},
		{",", nil, "expected OS/ARCH"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParsePlatforms(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParsePlatforms(%q) = %v, %v; want error containing %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var s []string
			for _, p := range got {
				s = append(s, p.OS+"/"+p.Architecture)
			}
			if strings.Join(s, ",") != strings.Join(tc.want, ",") {
				t.Errorf("ParsePlatforms(%q) = %v, want %v", tc.in, s, tc.want)
			}
		})
	}
}

func TestParsePlatform(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr string
	}{
		{"linux/amd64", "linux/amd64", ""},
		{"linux/arm64", "linux/arm64", ""},
		{"amd64", "linux/amd64", ""},
		{"arm64", "linux/arm64", ""},
		{"linux/arm64/v8", "linux/arm64/v8", ""},
		{"LINUX/AMD64", "linux/amd64", ""},
		{"aarch64", "linux/arm64", ""},
		{"x86_64", "linux/amd64", ""},
		{"linux/amd64/v3", "linux/amd64/v3", ""},
		{"windows/amd64", "", `OS "windows" is not supported`},
		{"linux/arm/v7", "", `architecture "arm" is not supported`},
		{"riscv64", "", `architecture "riscv64" is not supported`},
		{"linux/arm64/v7", "", `variant "v7"`},
		{"", "", "expected OS/ARCH"},
		{"linux/amd64/v2/x", "", "expected OS/ARCH"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			p, err := ParsePlatform(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParsePlatform(%q) = %v, %v; want error containing %q", tc.in, p, err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), "linux/amd64, linux/arm64") {
					t.Errorf("error does not list the supported platforms: %v", err)
				}
				var he HintError
				if !errors.As(err, &he) || len(he.Hints()) == 0 {
					t.Errorf("error has no hints: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := platformString(p); got != tc.want {
				t.Errorf("ParsePlatform(%q) = %s, want %s", tc.in, got, tc.want)
			}
		})
	}
}

func TestHostPlatform(t *testing.T) {
	p := HostPlatform()
	if p.OS != "linux" || p.Architecture == "" {
		t.Fatalf("HostPlatform() = %v", p)
	}
}

func TestPlatformScore(t *testing.T) {
	pl := func(s string) Platform {
		parts := strings.Split(s, "/")
		p := Platform{OS: parts[0], Architecture: parts[1]}
		if len(parts) > 2 {
			p.Variant = parts[2]
		}
		return p
	}
	tests := []struct {
		have, want string
		match      bool
	}{
		{"linux/arm64", "linux/arm64", true},
		{"linux/arm64/v8", "linux/arm64", true},
		{"linux/arm64", "linux/arm64/v8", true},
		{"linux/arm64/v8", "linux/arm64/v8", true},
		{"linux/amd64", "linux/arm64", false},
		{"linux/arm/v7", "linux/arm64", false},
		{"windows/amd64", "linux/amd64", false},
		{"linux/amd64/v3", "linux/amd64", true},
		{"linux/amd64", "linux/amd64/v3", false},
	}
	for _, tc := range tests {
		if got := platformScore(pl(tc.have), pl(tc.want)) > 0; got != tc.match {
			t.Errorf("platformScore(%s, %s) match = %v, want %v", tc.have, tc.want, got, tc.match)
		}
	}
	// Exact variant preferred over a variant when none is asked for.
	if platformScore(pl("linux/amd64"), pl("linux/amd64")) <= platformScore(pl("linux/amd64/v3"), pl("linux/amd64")) {
		t.Error("plain amd64 should beat amd64/v3 when no variant is asked for")
	}
}

func TestRegistryReferences(t *testing.T) {
	tests := []struct {
		ref      string
		insecure []string
		scheme   string
		loopback bool
	}{
		{"localhost:5000/app", nil, "http", true},
		{"localhost/app:1", nil, "http", true},
		{"127.0.0.1:5000/app", nil, "http", true},
		{"127.0.0.2:5000/app", nil, "http", true},
		{"[::1]:5000/app:tag", nil, "http", true},
		{"registry.localhost:8080/a/b", nil, "http", true},
		{"docker.io/library/alpine", nil, "https", false},
		{"alpine:3.20", nil, "https", false},
		{"ghcr.io/o/r@sha256:" + strings.Repeat("a", 64), nil, "https", false},
		{"reg.example:5000/app", []string{"reg.example:5000"}, "http", false},
		{"reg.example:5000/app", []string{"reg.example"}, "http", false},
		{"reg.example:5000/app", []string{"reg.example:6000"}, "https", false},
		{"reg.example/app", []string{"http://REG.example/"}, "http", false},
		{"other.example/app", []string{"reg.example"}, "https", false},
	}
	for _, tc := range tests {
		t.Run(tc.ref, func(t *testing.T) {
			ref, err := ParseReference(tc.ref, tc.insecure)
			if err != nil {
				t.Fatal(err)
			}
			reg := ref.Context().Registry
			if got := reg.Scheme(); got != tc.scheme {
				t.Errorf("scheme = %s, want %s", got, tc.scheme)
			}
			if got := IsLoopbackRegistry(reg.RegistryStr()); got != tc.loopback {
				t.Errorf("IsLoopbackRegistry(%s) = %v, want %v", reg.RegistryStr(), got, tc.loopback)
			}
		})
	}
	if _, err := ParseReference("UPPER/case::bad", nil); err == nil {
		t.Error("want error for an invalid reference")
	} else if he, ok := err.(HintError); !ok || len(he.Hints()) == 0 {
		t.Errorf("invalid reference error has no hints: %v", err)
	}
	ref, _ := ParseReference("[::1]:5000/app:tag", nil)
	if _, ok := ref.(name.Tag); !ok || ref.Context().RepositoryStr() != "app" {
		t.Errorf("[::1]:5000/app:tag parsed as %#v", ref)
	}
}

func TestSplitPathRef(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "layout")
	colon := filepath.Join(dir, "odd:name")
	os.Mkdir(plain, 0o755)
	os.Mkdir(colon, 0o755)
	os.WriteFile(filepath.Join(plain, "index.json"), []byte("{}"), 0o644)
	os.WriteFile(filepath.Join(colon, "index.json"), []byte("{}"), 0o644)
	archive := filepath.Join(dir, "img.tar")
	os.WriteFile(archive, nil, 0o644)
	tests := []struct {
		in, path, ref string
	}{
		{plain, plain, ""},
		{plain + ":v1", plain, "v1"},
		{plain + ":latest", plain, "latest"},
		{colon, colon, ""},           // exists whole: a ':' in the name
		{colon + ":v2", colon, "v2"}, // split at the last ':'
		{filepath.Join(dir, "missing:v1"), filepath.Join(dir, "missing:v1"), ""},
		{plain + ":", plain + ":", ""},
		{archive + ":example.com/app:1.0", archive, "example.com/app:1.0"},
		{archive + ":v1", archive, "v1"},
	}
	for _, tc := range tests {
		p, r := SplitPathRef(tc.in)
		if p != tc.path || r != tc.ref {
			t.Errorf("SplitPathRef(%q) = %q, %q; want %q, %q", tc.in, p, r, tc.path, tc.ref)
		}
	}
}

func TestCompressionOf(t *testing.T) {
	tests := []struct {
		mt      types.MediaType
		want    string
		wantErr string
	}{
		{types.OCILayer, "gzip", ""},
		{types.DockerLayer, "gzip", ""},
		{types.OCILayerZStd, "zstd", ""},
		{types.OCIUncompressedLayer, "none", ""},
		{"application/vnd.docker.image.rootfs.diff.tar", "none", ""},
		{types.DockerForeignLayer, "", "foreign"},
		{types.OCIRestrictedLayer, "", "foreign"},
		{types.OCIUncompressedRestrictedLayer, "", "foreign"},
		{"application/vnd.cncf.helm.chart.content.v1.tar+gzip", "", "unsupported media type"},
		{"", "", "unsupported media type"},
	}
	for _, tc := range tests {
		got, err := compressionOf(tc.mt, "layer 1 sha256:abc")
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "layer 1 sha256:abc") {
				t.Errorf("compressionOf(%q) = %q, %v; want error with %q naming the layer", tc.mt, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("compressionOf(%q) = %q, %v; want %q", tc.mt, got, err, tc.want)
		}
	}
}

func TestSniffCompression(t *testing.T) {
	for in, want := range map[string]string{"\x1f\x8b\x08\x00": "gzip", "\x28\xb5\x2f\xfd": "zstd", "etc/": "none", "": "none"} {
		if got := sniffCompression([]byte(in)); got != want {
			t.Errorf("sniffCompression(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestVerifier(t *testing.T) {
	data := []byte("hello, world")
	good := sha256Of(data)
	tests := []struct {
		name    string
		data    []byte
		size    int64
		wantErr string
	}{
		{"ok", data, int64(len(data)), ""},
		{"ok unknown size", data, -1, ""},
		{"flipped", []byte("hello, wOrld"), int64(len(data)), "digest mismatch: got sha256:"},
		{"short", data[:5], int64(len(data)), "5 bytes, expected 12"},
		{"long", append(append([]byte{}, data...), '!'), int64(len(data)), "more than the 12 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := newVerifier(bytes.NewReader(tc.data), good, tc.size, "layer 0 "+good.String())
			if err != nil {
				t.Fatal(err)
			}
			_, err = readAllSmallBuf(v)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "layer 0 "+good.String()) || !errors.Is(err, ErrDigestMismatch) {
				t.Fatalf("err = %v, want one naming the layer with %q", err, tc.wantErr)
			}
		})
	}
}

// readAllSmallBuf reads with a tiny buffer to exercise partial reads.
func readAllSmallBuf(r interface{ Read([]byte) (int, error) }) ([]byte, error) {
	var out []byte
	buf := make([]byte, 3)
	for {
		n, err := r.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			if err.Error() == "EOF" {
				return out, nil
			}
			return out, err
		}
	}
}

func TestCacheBehaviour(t *testing.T) {
	ctx := context.Background()
	c, err := newBlobCache(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("layer-bytes "), 10000)
	desc := v1.Descriptor{Digest: sha256Of(data), Size: int64(len(data))}

	t.Run("miss", func(t *testing.T) {
		if _, ok, err := c.get(ctx, desc); ok || err != nil {
			t.Fatalf("get on empty cache = %v, %v", ok, err)
		}
	})
	t.Run("tee commits only a complete verified stream", func(t *testing.T) {
		rc := c.tee(nopCloser{bytes.NewReader(data[:100])}, desc) // truncated source
		readAllSmallBuf(rc)
		rc.Close()
		if _, ok, _ := c.get(ctx, desc); ok {
			t.Fatal("a truncated stream was committed")
		}
		rc = c.tee(nopCloser{bytes.NewReader(data)}, desc)
		buf := make([]byte, 10)
		rc.Read(buf)
		rc.Close() // closed before EOF
		if _, ok, _ := c.get(ctx, desc); ok {
			t.Fatal("a stream closed early was committed")
		}
		assertNoTemps(t, c.dir)
		rc = c.tee(nopCloser{bytes.NewReader(data)}, desc)
		got, err := readAllSmallBuf(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("tee changed the data: %v", err)
		}
		f, ok, err := c.get(ctx, desc)
		if !ok || err != nil {
			t.Fatalf("complete stream not committed: %v %v", ok, err)
		}
		f.Close()
		assertNoTemps(t, c.dir)
	})
	t.Run("corrupt entry removed", func(t *testing.T) {
		p := c.path(desc.Digest)
		b, _ := os.ReadFile(p)
		b[5] ^= 0xff
		os.WriteFile(p, b, 0o644)
		if _, ok, err := c.get(ctx, desc); ok || err != nil {
			t.Fatalf("corrupt entry served: %v %v", ok, err)
		}
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("corrupt entry not removed: %v", err)
		}
		// Same size check: a truncated entry is a miss too.
		os.WriteFile(p, data[:10], 0o644)
		if _, ok, _ := c.get(ctx, desc); ok {
			t.Fatal("truncated entry served")
		}
	})
	t.Run("put and getBytes", func(t *testing.T) {
		small := []byte(`{"schemaVersion":2}`)
		if err := c.put(small); err != nil {
			t.Fatal(err)
		}
		b, ok, err := c.getBytes(ctx, v1.Descriptor{Digest: sha256Of(small)}, 1<<20)
		if !ok || err != nil || !bytes.Equal(b, small) {
			t.Fatalf("getBytes = %q %v %v", b, ok, err)
		}
	})
	t.Run("concurrent writers and readers", func(t *testing.T) {
		os.Remove(c.path(desc.Digest))
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for g := 0; g < 2; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 20; i++ {
					if f, ok, err := c.get(ctx, desc); err != nil {
						errs <- err
						return
					} else if ok {
						got, _ := readAllSmallBuf(bufReader{f})
						f.Close()
						if !bytes.Equal(got, data) {
							errs <- errors.New("reader saw a partial or wrong entry")
							return
						}
						os.Remove(c.path(desc.Digest)) // force more writes
						continue
					}
					rc := c.tee(nopCloser{bytes.NewReader(data)}, desc)
					got, err := readAllSmallBuf(bufReader{rc})
					rc.Close()
					if err != nil || !bytes.Equal(got, data) {
						errs <- errors.New("tee stream wrong")
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		assertNoTemps(t, c.dir)
	})
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

// bufReader reads in 64 KiB chunks (readAllSmallBuf's 3-byte reads would be slow here).
type bufReader struct {
	r interface{ Read([]byte) (int, error) }
}

func (b bufReader) Read(p []byte) (int, error) { return b.r.Read(p) }

func assertNoTemps(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}

// TestPlatformErrors: an image of a platform docker2vm cannot convert is
// never met with a --platform hint that would then be refused; the
// platforms an index offers are listed.
func TestPlatformErrors(t *testing.T) {
	amd64 := Platform{OS: "linux", Architecture: "amd64"}
	arm64 := Platform{OS: "linux", Architecture: "arm64"}
	win := Platform{OS: "windows", Architecture: "amd64"}
	tests := []struct {
		name    string
		err     error
		want    string
		hint    string
		notHint string
	}{
		{"single windows image", platformMismatchError(win, amd64),
			"image is windows/amd64, which cannot be converted (docker2vm converts linux/amd64 and linux/arm64 images)", "Choose an image that is published for linux/amd64.", "--platform windows"},
		{"single arm64 image", platformMismatchError(arm64, amd64),
			"image is linux/arm64 but --platform is linux/amd64", "pass --platform linux/arm64", ""},
		{"windows-only index", platformMissError(amd64, []Platform{win, {OS: "windows", Architecture: "arm64"}}),
			"it offers windows/amd64, windows/arm64, and none of them can be converted", "Choose an image", "--platform"},
		{"index with arm64 only", platformMissError(amd64, []Platform{win, arm64}),
			"the image has no linux/amd64 variant; it offers: linux/arm64, windows/amd64", "Pass --platform linux/arm64", "--platform windows"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(tc.err.Error(), tc.want) {
				t.Errorf("%q, want %q", tc.err, tc.want)
			}
			hints := strings.Join(hint.Of(tc.err), "\n")
			if !strings.Contains(hints, tc.hint) || (tc.notHint != "" && strings.Contains(hints+tc.err.Error(), tc.notHint)) {
				t.Errorf("hints %q: want %q, not %q", hints, tc.hint, tc.notHint)
			}
		})
	}
}
