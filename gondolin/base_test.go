package gondolin

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/testtar"
)

func envFrom(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// storeWithRef imports a base into a store under ref for arch.
func storeWithRef(t *testing.T, store, ref, arch string) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src-"+arch)
	makeBaseDir(t, src, arch, true)
	obj, err := Import(context.Background(), src, ref, store)
	if err != nil {
		t.Fatal(err)
	}
	return obj
}

func TestFindBaseOrder(t *testing.T) {
	ctx := context.Background()
	home := t.TempDir()
	explicit := filepath.Join(t.TempDir(), "explicit")
	makeBaseDir(t, explicit, ArchX86_64, false)
	guest := filepath.Join(t.TempDir(), "guest")
	makeBaseDir(t, guest, ArchX86_64, true)
	store := filepath.Join(home, ".cache", "gondolin", "images")
	objX := storeWithRef(t, store, "alpine-base:latest", ArchX86_64)
	objA := storeWithRef(t, store, "alpine-base:latest", ArchAarch64)
	custom := storeWithRef(t, store, "custom:v1", ArchX86_64)
	legacy := filepath.Join(home, ".cache", "gondolin", "v0.5.1")
	makeBaseDir(t, legacy, ArchAarch64, false)
	older := filepath.Join(home, ".cache", "gondolin", "v0.4.9")
	makeBaseDir(t, older, ArchX86_64, false)

	tests := []struct {
		name       string
		o          BaseOptions
		wantDir    string
		wantOrigin string
	}{
		{"flag wins", BaseOptions{Dir: explicit, Platform: "linux/amd64", Getenv: envFrom(map[string]string{"GONDOLIN_GUEST_DIR": guest, "HOME": home})}, explicit, "--base"},
		{"guest dir", BaseOptions{Platform: "amd64", Getenv: envFrom(map[string]string{"GONDOLIN_GUEST_DIR": guest, "HOME": home})}, guest, "GONDOLIN_GUEST_DIR"},
		{"store x86_64 target", BaseOptions{Platform: "linux/amd64", Getenv: envFrom(map[string]string{"HOME": home})}, objX, "image store ref alpine-base:latest"},
		{"store aarch64 target", BaseOptions{Platform: "linux/arm64", Getenv: envFrom(map[string]string{"HOME": home})}, objA, "image store ref alpine-base:latest"},
		{"default image env", BaseOptions{Platform: "linux/amd64", Getenv: envFrom(map[string]string{"HOME": home, "GONDOLIN_DEFAULT_IMAGE": "custom:v1"})}, custom, "image store ref custom:v1"},
		{"default image by build id", BaseOptions{Platform: "linux/amd64", Getenv: envFrom(map[string]string{"HOME": home, "GONDOLIN_DEFAULT_IMAGE": filepath.Base(objX)})}, objX, "image store object " + filepath.Base(objX)},
		{"store env", BaseOptions{Platform: "linux/amd64", Getenv: envFrom(map[string]string{"GONDOLIN_IMAGE_STORE": store})}, objX, "image store ref alpine-base:latest"},
		{"xdg cache", BaseOptions{Platform: "linux/amd64", Getenv: envFrom(map[string]string{"XDG_CACHE_HOME": filepath.Join(home, ".cache")})}, objX, "image store ref alpine-base:latest"},
		{"legacy newest matching arch", BaseOptions{NoDownload: true, Platform: "linux/arm64", Getenv: envFrom(map[string]string{"HOME": home, "GONDOLIN_DEFAULT_IMAGE": "nothing:here"})}, legacy, "older Gondolin cache v0.5.1"},
		{"legacy skips other arch", BaseOptions{NoDownload: true, Platform: "linux/amd64", Getenv: envFrom(map[string]string{"HOME": home, "GONDOLIN_DEFAULT_IMAGE": "nothing:here"})}, older, "older Gondolin cache v0.4.9"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := FindBase(ctx, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			if b.Dir != tc.wantDir || b.Origin != tc.wantOrigin {
				t.Fatalf("got %s (%s), want %s (%s)", b.Dir, b.Origin, tc.wantDir, tc.wantOrigin)
			}
			if b.Arch != NormalizeArch(tc.o.Platform) {
				t.Fatalf("arch %s", b.Arch)
			}
		})
	}
}

func TestFindBaseErrors(t *testing.T) {
	ctx := context.Background()
	armDir := filepath.Join(t.TempDir(), "arm")
	makeBaseDir(t, armDir, ArchAarch64, true)
	armNoManifest := filepath.Join(t.TempDir(), "arm2")
	makeBaseDir(t, armNoManifest, ArchAarch64, false)
	incomplete := t.TempDir()
	os.WriteFile(filepath.Join(incomplete, KernelName), fakeKernel(ArchX86_64), 0o644)
	escape := filepath.Join(t.TempDir(), "esc")
	makeBaseDir(t, escape, ArchX86_64, false)
	os.WriteFile(filepath.Join(escape, ManifestName), []byte(`{"version":1,"config":{"arch":"x86_64"},"assets":{"kernel":"../k","initramfs":"i","rootfs":"r"}}`), 0o644)
	emptyHome := t.TempDir()
	lying := filepath.Join(t.TempDir(), "lying")
	makeBaseDir(t, lying, ArchAarch64, true)
	os.WriteFile(filepath.Join(lying, KernelName), fakeKernel(ArchX86_64), 0o644)

	tests := []struct {
		name string
		o    BaseOptions
		want []string
	}{
		{"flag wrong arch", BaseOptions{Dir: armDir, Platform: "linux/amd64"}, []string{"is for aarch64 but the target is x86_64", "--base DIR"}},
		{"flag wrong arch from kernel header", BaseOptions{Dir: armNoManifest, Platform: "linux/amd64"}, []string{"is for aarch64"}},
		{"manifest arch is not the kernel's", BaseOptions{Dir: lying, Platform: "linux/arm64"}, []string{"config.arch aarch64", "is an x86_64 kernel"}},
		{"flag incomplete", BaseOptions{Dir: incomplete, Platform: "linux/amd64"}, []string{"missing guest assets", "initramfs.cpio.lz4, rootfs.ext4"}},
		{"manifest escapes", BaseOptions{Dir: escape, Platform: "linux/amd64"}, []string{"assets.kernel"}},
		{"guest dir wrong", BaseOptions{Platform: "linux/amd64", Getenv: envFrom(map[string]string{"GONDOLIN_GUEST_DIR": armDir})}, []string{"GONDOLIN_GUEST_DIR=", "Unset GONDOLIN_GUEST_DIR"}},
		{"nothing anywhere", BaseOptions{Platform: "linux/amd64", NoDownload: true, Getenv: envFrom(map[string]string{"HOME": emptyHome})},
			[]string{"no Gondolin base bundle for x86_64", "GONDOLIN_GUEST_DIR: not set", filepath.Join(emptyHome, ".cache/gondolin/images/refs/alpine-base/latest/x86_64"), "download: disabled", "gondolin image pull alpine-base:latest", "--base DIR", "Or pass --plain"}},
		{"bad platform", BaseOptions{Platform: "linux/s390x"}, []string{"unsupported target platform"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := FindBase(ctx, tc.o)
			if err == nil {
				t.Fatal("no error")
			}
			full := err.Error() + "\n" + strings.Join(hint.Of(err), "\n")
			for _, w := range tc.want {
				if !strings.Contains(full, w) {
					t.Errorf("error %q lacks %q", full, w)
				}
			}
		})
	}
}

func TestFindBaseStoreOtherArchOnly(t *testing.T) {
	home := t.TempDir()
	store := filepath.Join(home, ".cache", "gondolin", "images")
	storeWithRef(t, store, "alpine-base:latest", ArchAarch64)
	_, err := FindBase(context.Background(), BaseOptions{Platform: "linux/amd64", NoDownload: true, Getenv: envFrom(map[string]string{"HOME": home})})
	if err == nil || !strings.Contains(err.Error(), "there is one for aarch64 only") {
		t.Fatalf("err = %v", err)
	}
}

// makeTarGz is a gzipped tar of entries (internal/testtar).
func makeTarGz(t *testing.T, entries ...testtar.Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := testtar.Write(zw, entries...); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// baseArchive returns a valid base archive for arch and its build id.
func baseArchive(t *testing.T, arch string) ([]byte, string) {
	dir := t.TempDir()
	makeBaseDir(t, dir, arch, true)
	m, err := ReadManifest(filepath.Join(dir, ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	es := []testtar.Entry{testtar.Dir("./")}
	for _, n := range []string{ManifestName, KernelName, InitramfsName, RootfsName} {
		d, _ := os.ReadFile(filepath.Join(dir, n))
		es = append(es, testtar.FileBytes("./"+n, d))
	}
	return makeTarGz(t, es...), m.BuildID
}

func registryServer(t *testing.T, archives map[string][]byte, reg func(srvURL string) any) *httptest.Server {
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/registry.json" {
			json.NewEncoder(w).Encode(reg(srv.URL))
			return
		}
		if a, ok := archives[r.URL.Path]; ok {
			w.Write(a)
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func TestFindBaseDownload(t *testing.T) {
	ctx := context.Background()
	good, goodID := baseArchive(t, ArchX86_64)
	goodArm, goodArmID := baseArchive(t, ArchAarch64)
	evil := makeTarGz(t, testtar.File("../evil", "x"))
	link := makeTarGz(t, testtar.Symlink("vmlinuz-virt", "x"))
	nested := makeTarGz(t, testtar.File("sub/vmlinuz-virt", "x"))
	archives := map[string][]byte{"/good.tar.gz": good, "/arm.tar.gz": goodArm, "/evil.tar.gz": evil, "/link.tar.gz": link, "/nested.tar.gz": nested}

	mkreg := func(ref, buildID, url, sum, arch string) func(string) any {
		return func(string) any {
			return map[string]any{"schema": 1,
				"refs":   map[string]any{ref: map[string]string{arch: buildID}},
				"builds": map[string]any{buildID: map[string]string{"arch": arch, "url": url, "sha256": sum}}}
		}
	}
	fakeID := "11111111-2222-5333-8444-555555555555"
	tests := []struct {
		name    string
		reg     func(string) any
		arch    string
		wantErr string
	}{
		{"ok relative url", mkreg("alpine-base:latest", goodID, "good.tar.gz", sha(good), "x86_64"), "linux/amd64", ""},
		{"ok arm", mkreg("alpine-base:latest", goodArmID, "arm.tar.gz", sha(goodArm), "aarch64"), "linux/arm64", ""},
		{"target arch missing", mkreg("alpine-base:latest", goodArmID, "arm.tar.gz", sha(goodArm), "aarch64"), "linux/amd64", "has no build for x86_64"},
		{"checksum mismatch", mkreg("alpine-base:latest", goodID, "good.tar.gz", strings.Repeat("0", 64), "x86_64"), "linux/amd64", "checksum mismatch"},
		{"no checksum", mkreg("alpine-base:latest", goodID, "good.tar.gz", "", "x86_64"), "linux/amd64", "no valid sha256"},
		{"build id mismatch", mkreg("alpine-base:latest", fakeID, "good.tar.gz", sha(good), "x86_64"), "linux/amd64", "buildId mismatch"},
		{"arch mismatch", mkreg("alpine-base:latest", goodArmID, "arm.tar.gz", sha(goodArm), "x86_64"), "linux/amd64", "arch mismatch"},
		{"traversal", mkreg("alpine-base:latest", fakeID, "evil.tar.gz", sha(evil), "x86_64"), "linux/amd64", "not a flat file name"},
		{"symlink entry", mkreg("alpine-base:latest", fakeID, "link.tar.gz", sha(link), "x86_64"), "linux/amd64", "not a regular file"},
		{"nested entry", mkreg("alpine-base:latest", fakeID, "nested.tar.gz", sha(nested), "x86_64"), "linux/amd64", "not a flat file name"},
		{"ref missing", mkreg("other:latest", goodID, "good.tar.gz", sha(good), "x86_64"), "linux/amd64", "not in the registry"},
		{"404", mkreg("alpine-base:latest", goodID, "missing.tar.gz", sha(good), "x86_64"), "linux/amd64", "404"},
	}
	// Failures the registry document shows, without the archive.
	resolveFails := map[string]bool{"target arch missing": true, "no checksum": true, "ref missing": true}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := registryServer(t, archives, tc.reg)
			store := t.TempDir()
			var progress bytes.Buffer
			o := BaseOptions{Platform: tc.arch, HTTPClient: srv.Client(), Progress: &progress,
				Getenv: envFrom(map[string]string{"GONDOLIN_IMAGE_STORE": store, "GONDOLIN_IMAGE_REGISTRY_URL": srv.URL + "/registry.json"})}
			// A dry run looks the build up without fetching it: it fails
			// where the registry document does, and writes nothing.
			ro := o
			ro.ResolveOnly = true
			rb, rerr := FindBase(ctx, ro)
			if resolveFails[tc.name] {
				if rerr == nil || !strings.Contains(rerr.Error(), tc.wantErr) {
					t.Errorf("resolve only: err = %v, want %q", rerr, tc.wantErr)
				}
			} else if rerr != nil || rb.Remote == nil || !strings.HasPrefix(rb.Remote.URL, srv.URL+"/") || rb.Dir != "" {
				t.Errorf("resolve only: %+v, %v", rb, rerr)
			}
			if ents, _ := os.ReadDir(store); len(ents) > 0 || progress.Len() > 0 {
				t.Fatalf("resolving wrote %v to the store, or downloaded: %q", ents, progress.String())
			}
			b, err := FindBase(ctx, o)
			// Nothing half-written may stay in the store.
			tmps, _ := filepath.Glob(filepath.Join(store, "objects", ".tmp-*"))
			if len(tmps) > 0 {
				t.Errorf("leftover temp dirs %v", tmps)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if objs, _ := os.ReadDir(filepath.Join(store, "objects")); len(objs) > 0 {
					t.Fatalf("store has objects after a failed download: %v", objs)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			arch := NormalizeArch(tc.arch)
			link := filepath.Join(store, "refs", "alpine-base", "latest", arch)
			target, err := os.Readlink(link)
			if err != nil || filepath.IsAbs(target) {
				t.Fatalf("ref link %q %v", target, err)
			}
			if filepath.Join(filepath.Dir(link), target) != b.Dir || b.Arch != arch || b.Manifest == nil {
				t.Fatalf("base %+v, link -> %s", b, target)
			}
			// Found again without network.
			o.NoDownload = true
			o.HTTPClient = &http.Client{Transport: failTransport{}}
			b2, err := FindBase(ctx, o)
			if err != nil || b2.Dir != b.Dir {
				t.Fatalf("second lookup: %v %v", err, b2)
			}
		})
	}
}

type failTransport struct{}

func (failTransport) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("network used")
}

func TestImportLayout(t *testing.T) {
	ctx := context.Background()
	store := t.TempDir()
	src := t.TempDir()
	makeBaseDir(t, src, ArchX86_64, true)
	m, _ := ReadManifest(filepath.Join(src, ManifestName))
	obj, err := Import(ctx, src, "team/my-image:v1", store)
	if err != nil {
		t.Fatal(err)
	}
	if obj != filepath.Join(store, "objects", m.BuildID) {
		t.Fatalf("object dir %s", obj)
	}
	for _, n := range []string{ManifestName, KernelName, InitramfsName, RootfsName} {
		a, _ := os.ReadFile(filepath.Join(src, n))
		b, err := os.ReadFile(filepath.Join(obj, n))
		if err != nil || !bytes.Equal(a, b) {
			t.Fatalf("%s not copied: %v", n, err)
		}
	}
	link := filepath.Join(store, "refs", "team", "my-image", "v1", "x86_64")
	target, err := os.Readlink(link)
	if err != nil || target != "../../../../objects/"+m.BuildID {
		t.Fatalf("link %q %v", target, err)
	}
	// Re-point the ref at a new build: replaced atomically.
	src2 := t.TempDir()
	makeBaseDir(t, src2, ArchX86_64, true)
	os.WriteFile(filepath.Join(src2, RootfsName), []byte("changed"), 0o644)
	c := Checksums{Kernel: sha(fakeKernel(ArchX86_64)), Initramfs: sha([]byte("initramfs-x86_64")), Rootfs: sha([]byte("changed"))}
	writeManifest(filepath.Join(src2, ManifestName), &Manifest{Version: 1, BuildID: BuildID(c, "x86_64"), Config: ManifestConfig{Arch: "x86_64"}, Assets: DefaultAssets(), Checksums: c})
	obj2, err := Import(ctx, src2, "team/my-image:v1", store)
	if err != nil || obj2 == obj {
		t.Fatal(err)
	}
	target, _ = os.Readlink(link)
	if target != "../../../../objects/"+BuildID(c, "x86_64") {
		t.Fatalf("link not replaced: %s", target)
	}
	leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(link), "*.tmp-*"))
	if len(leftovers) > 0 {
		t.Fatal(leftovers)
	}
	// Default tag.
	if _, err := Import(ctx, src, "plain", store); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Readlink(filepath.Join(store, "refs", "plain", "latest", "x86_64")); err != nil {
		t.Fatal(err)
	}

	// A sparse rootfs.ext4 (as docker2vm writes them: mostly holes) stays
	// sparse in the store, its bytes the same.
	src3 := t.TempDir()
	makeBaseDir(t, src3, ArchX86_64, true)
	const apparent = 64 << 20
	rootfs := make([]byte, apparent)
	copy(rootfs[4096:], "superblock")
	copy(rootfs[apparent-10:], "last bytes")
	f, _ := os.Create(filepath.Join(src3, RootfsName))
	f.WriteAt(rootfs[4096:8192], 4096)
	f.WriteAt(rootfs[apparent-4096:], apparent-4096)
	f.Close()
	c3 := Checksums{Kernel: c.Kernel, Initramfs: c.Initramfs, Rootfs: sha(rootfs)}
	writeManifest(filepath.Join(src3, ManifestName), &Manifest{Version: 1, BuildID: BuildID(c3, "x86_64"), Config: ManifestConfig{Arch: "x86_64"}, Assets: DefaultAssets(), Checksums: c3})
	obj3, err := Import(ctx, src3, "sparse:1", store)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(obj3, RootfsName))
	fi, _ := os.Stat(filepath.Join(obj3, RootfsName))
	if !bytes.Equal(got, rootfs) {
		t.Fatal("the sparse rootfs.ext4 changed on import")
	}
	if alloc := fi.Sys().(*syscall.Stat_t).Blocks * 512; alloc > 1<<20 { // (the system's count: a portable build's diskio cannot tell)
		t.Errorf("a 64 MiB rootfs.ext4 of 8 KiB of data takes %d bytes in the store", alloc)
	}
}

func TestImportRejects(t *testing.T) {
	ctx := context.Background()
	noManifest := t.TempDir()
	makeBaseDir(t, noManifest, ArchX86_64, false)
	noID := t.TempDir()
	makeBaseDir(t, noID, ArchX86_64, false)
	os.WriteFile(filepath.Join(noID, ManifestName), []byte(`{"version":1,"config":{"arch":"x86_64"},"assets":{"kernel":"vmlinuz-virt","initramfs":"initramfs.cpio.lz4","rootfs":"rootfs.ext4"}}`), 0o644)
	escape := t.TempDir()
	makeBaseDir(t, escape, ArchX86_64, true)
	os.Remove(filepath.Join(escape, RootfsName))
	outside := filepath.Join(t.TempDir(), "outside")
	os.WriteFile(outside, []byte("x"), 0o644)
	os.Symlink(outside, filepath.Join(escape, RootfsName))
	good := t.TempDir()
	makeBaseDir(t, good, ArchX86_64, true)
	for _, tc := range []struct{ name, dir, tag, want string }{
		{"no manifest", noManifest, "a:b", "manifest.json"},
		{"no build id", noID, "a:b", "buildId"},
		{"symlink escape", escape, "a:b", "outside"},
		{"bad tag", good, "../x:y", "invalid image name"},
		{"bad tag chars", good, "a:b/c", "invalid image"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := t.TempDir()
			_, err := Import(ctx, tc.dir, tc.tag, store)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if objs, _ := os.ReadDir(filepath.Join(store, "objects")); len(objs) > 0 {
				t.Fatalf("store not clean: %v", objs)
			}
		})
	}
}

// TestImportVerifies: an object is trusted by its build id once it is in
// the store (a later import of the same id keeps it), so Import must not
// publish one whose files differ from the manifest, or whose manifest was
// overwritten by an asset, and must leave nothing behind.
func TestImportVerifies(t *testing.T) {
	ctx := context.Background()
	edited := t.TempDir()
	makeBaseDir(t, edited, ArchX86_64, true)
	os.WriteFile(filepath.Join(edited, RootfsName), []byte("changed after the manifest"), 0o644)

	overManifest := t.TempDir()
	makeBaseDir(t, overManifest, ArchX86_64, false)
	c := Checksums{Kernel: sha(fakeKernel(ArchX86_64)), Initramfs: sha([]byte("initramfs-x86_64")), Rootfs: sha([]byte("rootfs-x86_64"))}
	writeManifest(filepath.Join(overManifest, ManifestName), &Manifest{Version: 1, BuildID: BuildID(c, "x86_64"),
		Config: ManifestConfig{Arch: "x86_64"}, Assets: Assets{Kernel: "./manifest.json", Initramfs: InitramfsName, Rootfs: RootfsName}})

	same := t.TempDir()
	makeBaseDir(t, same, ArchX86_64, false)
	writeManifest(filepath.Join(same, ManifestName), &Manifest{Version: 1, BuildID: BuildID(c, "x86_64"),
		Config: ManifestConfig{Arch: "x86_64"}, Assets: Assets{Kernel: KernelName, Initramfs: KernelName, Rootfs: RootfsName}})

	for _, tc := range []struct{ name, dir, want string }{
		{"checksum mismatch", edited, "does not match its manifest checksum"},
		{"asset named manifest.json", overManifest, `assets.kernel "manifest.json" is also the manifest`},
		{"two assets one file", same, "is also assets.kernel"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := t.TempDir()
			_, err := Import(ctx, tc.dir, "a:b", store)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if len(hint.Of(err)) == 0 {
				t.Errorf("no hint: %v", err)
			}
			if objs, _ := os.ReadDir(filepath.Join(store, "objects")); len(objs) > 0 {
				t.Fatalf("store not clean: %v", objs)
			}
			if _, err := os.Lstat(filepath.Join(store, "refs")); err == nil {
				t.Fatal("ref written")
			}
		})
	}
}

// TestManifestNotRegular: a manifest.json that is a symlink to a device
// or a FIFO is refused, not read forever or waited on.
func TestManifestNotRegular(t *testing.T) {
	if _, err := os.Stat("/dev/zero"); err != nil {
		require.Missing(t, "no /dev/zero")
	}
	dir := filepath.Join(t.TempDir(), "base")
	makeBaseDir(t, dir, ArchX86_64, false)
	if err := os.Symlink("/dev/zero", filepath.Join(dir, ManifestName)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := FindBase(context.Background(), BaseOptions{Dir: dir, Platform: "linux/amd64"})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("err = %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("FindBase read /dev/zero as a manifest")
	}
	if _, err := ReadManifest(filepath.Join(dir, ManifestName)); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("ReadManifest: %v", err)
	}
}

// TestDownloadDeterministic: a registry ref listing the target under
// several names (x86_64, amd64, x64) always resolves to the canonical
// name's build, and a pax global header in the archive is not an error.
func TestDownloadDeterministic(t *testing.T) {
	ctx := context.Background()
	good, goodID := baseArchive(t, ArchX86_64)
	// Re-pack with a pax global header first, as git archive writes (by
	// hand: a copy of another archive's headers, not a testtar build).
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header",
		PAXRecords: map[string]string{"comment": "abc"}, Format: tar.FormatPAX}); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		data, _ := io.ReadAll(tr)
		tw.WriteHeader(h)
		tw.Write(data)
	}
	tw.Close()
	zw.Close()
	withPax := buf.Bytes()
	other := "11111111-2222-5333-8444-555555555555"
	reg := func(string) any {
		return map[string]any{"schema": 1,
			"refs": map[string]any{"alpine-base:latest": map[string]string{"amd64": other, "x86_64": goodID, "x64": other, "X86_64": other}},
			"builds": map[string]any{
				goodID: map[string]string{"arch": "x86_64", "url": "good.tar.gz", "sha256": sha(withPax)},
				other:  map[string]string{"arch": "x86_64", "url": "missing.tar.gz", "sha256": sha(withPax)},
			}}
	}
	srv := registryServer(t, map[string][]byte{"/good.tar.gz": withPax}, reg)
	for i := 0; i < 20; i++ {
		store := t.TempDir()
		o := BaseOptions{Platform: "linux/amd64", HTTPClient: srv.Client(),
			Getenv: envFrom(map[string]string{"GONDOLIN_IMAGE_STORE": store, "GONDOLIN_IMAGE_REGISTRY_URL": srv.URL + "/registry.json"})}
		b, err := FindBase(ctx, o)
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		if filepath.Base(b.Dir) != goodID {
			t.Fatalf("run %d: got %s, want %s", i, b.Dir, goodID)
		}
	}
}

// TestFindBaseSeveralDirs: --base given once per arch; each target gets
// its own, and a target none of them fits is an error naming each.
func TestFindBaseSeveralDirs(t *testing.T) {
	ctx := context.Background()
	amd := filepath.Join(t.TempDir(), "amd")
	makeBaseDir(t, amd, ArchX86_64, true)
	arm := filepath.Join(t.TempDir(), "arm")
	makeBaseDir(t, arm, ArchAarch64, true)
	for _, tc := range []struct{ platform, want string }{{"linux/amd64", amd}, {"linux/arm64", arm}} {
		b, err := FindBase(ctx, BaseOptions{Dirs: []string{amd, arm}, Platform: tc.platform})
		if err != nil {
			t.Fatalf("%s: %v", tc.platform, err)
		}
		if b.Dir != tc.want {
			t.Errorf("%s: base %s, want %s", tc.platform, b.Dir, tc.want)
		}
	}
	_, err := FindBase(ctx, BaseOptions{Dirs: []string{amd, amd + "-missing"}, Platform: "linux/arm64"})
	if err == nil || !strings.Contains(err.Error(), "none of the --base directories") || !strings.Contains(err.Error(), "is for x86_64 but the target is aarch64") ||
		!strings.Contains(err.Error(), amd+"-missing") {
		t.Errorf("err = %v", err)
	}
}
