package convert

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/docker2vm/docker2vm/gondolin"
	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/image"
	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/testenv"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
	"github.com/docker2vm/docker2vm/internal/testtar"
)

// layerTar builds a test layer with internal/testtar, every entry dated
// with nanoseconds (which the output keeps).
func layerTar(t *testing.T, entries ...testtar.Entry) []byte {
	t.Helper()
	for i := range entries {
		entries[i] = entries[i].Mtime(1700000000, 123456789)
	}
	return testtar.Build(t, entries...)
}

// sampleImage has three layers with a whiteout, an opaque directory, a
// hardlink, a symlink, a setuid file with a capability and non-root owners.
func sampleImage(t *testing.T) v1.Image {
	cap := string([]byte{0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	l1 := layerTar(t,
		testtar.Dir("etc/"),
		testtar.File("etc/os-release", "ID=sample\n"),
		testtar.File("etc/secret", "lower layer secret\n"),
		testtar.Dir("opt/"),
		testtar.Dir("opt/old/"),
		testtar.File("opt/old/a", "a"),
		testtar.Dir("bin/"),
		testtar.File("bin/ping", "ELF pretend").Mode(0o4755).Xattr("security.capability", cap),
		testtar.Dir("home/"),
		testtar.Dir("home/user/").Mode(0o700).Owner(1000, 1000),
		testtar.File("home/user/notes", "mine").Owner(1000, 1000).Mode(0o600),
	)
	l2 := layerTar(t,
		testtar.Whiteout("etc/secret"),
		testtar.Opaque("opt/old"),
		testtar.File("opt/old/b", "b"),
		testtar.Hardlink("bin/ping6", "bin/ping"),
		testtar.Symlink("bin/sh", "busybox"),
	)
	l3 := layerTar(t, testtar.File("etc/motd", "hello from layer 3\n"))
	return imagetest.New(t, imagetest.Spec{OCI: true, Env: []string{"PATH=/usr/bin:/bin", "GREETING=hi"},
		Layers: []v1.Layer{
			imagetest.NewLayer(t, l1, imagetest.Gzip, true),
			imagetest.NewLayer(t, l2, imagetest.Zstd, true),
			imagetest.NewLayer(t, l3, imagetest.None, true),
		}})
}

func layoutSource(t *testing.T, img v1.Image) image.Source {
	dir := imagetest.WriteLayout(t, filepath.Join(t.TempDir(), "layout"), imagetest.LayoutEntry{Image: img})
	return image.Source{Kind: image.KindOCILayout, Ref: dir}
}

func options(src image.Source, out string) Options {
	return Options{
		Command: "oci2gondolin",
		Source:  src,
		Image:   image.Options{Platform: v1.Platform{OS: "linux", Architecture: "amd64"}, NoCache: true},
		Mode:    ModeRootfs,
		Plain:   true,
		OutDir:  out,
		Now:     func() time.Time { return time.Unix(1800000000, 0) },
	}
}

func TestRunRootfs(t *testing.T) {
	ctx := context.Background()
	out := filepath.Join(t.TempDir(), "out")
	res, err := Run(ctx, options(layoutSource(t, sampleImage(t)), out))
	if err != nil {
		t.Fatal(err)
	}
	if res.RootfsPath != filepath.Join(out, RootfsFile) || res.MetadataPath != filepath.Join(out, MetadataFile) ||
		res.Mode != ModeRootfs || res.Platform != "linux/amd64" || !strings.HasPrefix(res.SourceDigest, "sha256:") {
		t.Errorf("result = %+v", res)
	}
	if len(res.Files) != 2 {
		t.Errorf("files = %q, want rootfs.ext4 and meta.json", res.Files)
	}
	var meta Metadata
	b, err := os.ReadFile(res.MetadataPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &meta); err != nil {
		t.Fatal(err)
	}
	if meta.SourceDigest != res.SourceDigest || len(meta.Layers) != 3 || meta.Runtime.Env[1] != "GREETING=hi" ||
		meta.GeneratedAt != "2027-01-15T08:00:00Z" || meta.Source.Kind != "oci-layout" {
		t.Errorf("meta = %+v", meta)
	}

	fs := testenv.OpenExt4(t, res.RootfsPath)
	checkFile := func(p, want string) {
		t.Helper()
		r, err := fs.Open(p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			return
		}
		got, _ := io.ReadAll(r)
		if string(got) != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	checkFile("/etc/os-release", "ID=sample\n")
	checkFile("/etc/motd", "hello from layer 3\n")
	checkFile("/opt/old/b", "b")
	checkFile("/home/user/notes", "mine")
	for _, gone := range []string{"/etc/secret", "/opt/old/a", "/etc/.wh.secret", "/opt/old/.wh..wh..opq"} {
		if _, err := fs.Open(gone); err == nil {
			t.Errorf("%s survived its whiteout", gone)
		}
	}
	if target, err := fs.Readlink("/bin/sh"); err != nil || target != "busybox" {
		t.Errorf("readlink /bin/sh = %q, %v", target, err)
	}
	if !require.Integrating() {
		return
	}
	e2fsck := require.Tool(t, "e2fsck")
	if out, err := exec.Command(e2fsck, "-fn", res.RootfsPath).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn: %v\n%s", err, out)
	}
	debugfs := require.Tool(t, "debugfs")
	stat := func(p string) string {
		out, err := exec.Command(debugfs, "-R", "stat "+p, res.RootfsPath).CombinedOutput()
		if err != nil {
			t.Fatalf("debugfs stat %s: %v\n%s", p, err, out)
		}
		return string(out)
	}
	ping := stat("/bin/ping")
	for _, want := range []string{"Mode:  04755", "Links: 2", "security.capability (20)"} {
		if !strings.Contains(ping, want) {
			t.Errorf("debugfs stat /bin/ping lacks %q:\n%s", want, ping)
		}
	}
	if home := stat("/home/user"); !strings.Contains(home, "User:  1000   Group:  1000") || !strings.Contains(home, "Mode:  0700") {
		t.Errorf("debugfs stat /home/user:\n%s", home)
	}
}

func TestRunReplacesEarlierOutputAtomically(t *testing.T) {
	ctx := context.Background()
	out := filepath.Join(t.TempDir(), "out")
	src := layoutSource(t, sampleImage(t))
	if _, err := Run(ctx, options(src, out)); err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(filepath.Join(out, RootfsFile))
	if m := readMeta(t, out); strings.Join(m.Files, " ") != "meta.json rootfs.ext4" {
		t.Errorf("meta.json files = %v", m.Files)
	}
	// A file docker2vm did not write: refused (before anything runs),
	// kept; replaced with --force.
	user := filepath.Join(out, "notes.txt")
	if err := os.WriteFile(user, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(ctx, options(src, out)); err == nil || !strings.Contains(err.Error(), "did not write: notes.txt") {
		t.Fatalf("converting into an output with a user file: %v", err)
	}
	if b, _ := os.ReadFile(user); string(b) != "mine" {
		t.Fatal("the user's file was changed")
	}
	o := options(src, out)
	o.Force = true
	if _, err := Run(ctx, o); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(user); !os.IsNotExist(err) {
		t.Errorf("--force kept a file of the earlier output: %v", err)
	}
	if _, err := Run(ctx, options(src, out)); err != nil {
		t.Fatal(err)
	}
	second, _ := os.ReadFile(filepath.Join(out, RootfsFile))
	if !bytes.Equal(first, second) {
		t.Errorf("the same image and options gave different rootfs.ext4 bytes")
	}
	assertNoStaging(t, filepath.Dir(out))
}

func assertNoStaging(t *testing.T, parent string) {
	t.Helper()
	ents, _ := os.ReadDir(parent)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("staging directory left behind: %s", e.Name())
		}
	}
}

func TestRunRefusesForeignOutDir(t *testing.T) {
	out := t.TempDir()
	keep := filepath.Join(out, "precious.txt")
	if err := os.WriteFile(keep, []byte("user data"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Run(context.Background(), options(layoutSource(t, sampleImage(t)), out))
	if err == nil || !strings.Contains(err.Error(), "does not hold a docker2vm output") {
		t.Fatalf("err = %v", err)
	}
	if b, _ := os.ReadFile(keep); string(b) != "user data" {
		t.Errorf("user file changed")
	}
}

func TestRunTamperedLayerLeavesOutputIntact(t *testing.T) {
	ctx := context.Background()
	img := sampleImage(t)
	src := layoutSource(t, img)
	out := filepath.Join(t.TempDir(), "out")
	if _, err := Run(ctx, options(src, out)); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(out, MetadataFile))
	layers, _ := img.Layers()
	d, _ := layers[2].Digest()
	blob := filepath.Join(src.Ref, "blobs", "sha256", d.Hex)
	b, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(blob, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Run(ctx, options(src, out))
	if !errors.Is(err, image.ErrDigestMismatch) || !strings.Contains(err.Error(), d.Hex[:12]) {
		t.Fatalf("err = %v, want a digest mismatch naming %s", err, d)
	}
	after, _ := os.ReadFile(filepath.Join(out, MetadataFile))
	if !bytes.Equal(before, after) {
		t.Errorf("the previous output changed after a failed run")
	}
	assertNoStaging(t, filepath.Dir(out))
}

func TestPlanWritesNothing(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	plan, err := PlanConversion(context.Background(), options(layoutSource(t, sampleImage(t)), out))
	if err != nil {
		t.Fatal(err)
	}
	if !plan.DryRun || len(plan.Image.Layers) != 3 || plan.Image.Layers[1].MediaType != "application/vnd.oci.image.layer.v1.tar+zstd" ||
		plan.Image.Config.Env[1] != "GREETING=hi" || plan.Platform != "linux/amd64" {
		t.Errorf("plan = %+v", plan)
	}
	var ids []string
	for _, s := range plan.Steps {
		ids = append(ids, s.ID)
	}
	if got := strings.Join(ids, ","); got != "resolve,layer-0,layer-1,layer-2,rootfs,metadata,publish" {
		t.Errorf("steps = %s", got)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("dry run created %s", out)
	}
}

// TestRunFullDisk converts into a filesystem that runs out of space: the
// error must say so and name the file, and nothing may be left behind.
func TestRunFullDisk(t *testing.T) {
	require.Integration(t, "mounts a tmpfs")
	require.Root(t, "to mount a small tmpfs")
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	big := make([]byte, 4<<20)
	for i := range big {
		big[i] = byte(i*7919 + i>>8) // not zero, so it is not a hole
	}
	img := imagetest.New(t, imagetest.Spec{OCI: true,
		Layers: []v1.Layer{imagetest.NewLayer(t, layerTar(t, testtar.FileBytes("big", big)), imagetest.Gzip, true)}})
	out := filepath.Join(dir, "out")
	_, err := Run(context.Background(), options(layoutSource(t, img), out))
	if err == nil || !strings.Contains(err.Error(), "no space left on device") || !strings.Contains(err.Error(), "rootfs.ext4") || len(hint.Of(err)) == 0 {
		t.Fatalf("err = %v, want ENOSPC naming rootfs.ext4", err)
	}
	if testing.Verbose() {
		t.Logf("error: %v", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 0 {
		t.Errorf("left behind in the full filesystem: %v", ents)
	}
}

// TestPlanReportsBase: the dry run names the base a run would use, or the
// build it would download, and refuses what the run would refuse.
func TestPlanReportsBase(t *testing.T) {
	src := layoutSource(t, sampleImage(t))
	base := t.TempDir()
	for _, f := range []string{"vmlinuz-virt", "initramfs.cpio.lz4", "rootfs.ext4"} {
		if err := os.WriteFile(filepath.Join(base, f), []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	manifest := `{"version":1,"buildId":"00000000-0000-5000-8000-000000000000","config":{"arch":"x86_64"},` +
		`"assets":{"kernel":"vmlinuz-virt","initramfs":"initramfs.cpio.lz4","rootfs":"rootfs.ext4"}}`
	if err := os.WriteFile(filepath.Join(base, "manifest.json"), []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := func(string) string { return "" }
	// Gondolin's image registry: the dry run looks the build up there,
	// and never fetches the archive.
	const buildID = "11111111-2222-5333-8444-555555555555"
	doc := func(arch string) string {
		return `{"schema":1,"refs":{"alpine-base:latest":{"` + arch + `":"` + buildID + `"}},"builds":{"` + buildID +
			`":{"arch":"` + arch + `","url":"x86.tar.gz","sha256":"` + strings.Repeat("a", 64) + `"}}}`
	}
	reg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/registry.json":
			io.WriteString(w, doc("x86_64"))
		case "/arm-only.json":
			io.WriteString(w, doc("aarch64"))
		case "/missing.json":
			http.NotFound(w, r)
		default:
			t.Errorf("the dry run asked for %s", r.URL.Path)
			http.NotFound(w, r)
		}
	}))
	defer reg.Close()
	home := t.TempDir()
	regEnv := func(url string) func(string) string {
		return func(k string) string {
			switch k {
			case "HOME":
				return home
			case "GONDOLIN_IMAGE_REGISTRY_URL":
				return url
			}
			return ""
		}
	}
	tests := []struct {
		name    string
		base    gondolin.BaseOptions
		want    *PlanBase
		wantErr string
	}{
		{name: "explicit base", base: gondolin.BaseOptions{Dir: base},
			want: &PlanBase{Dir: base, Origin: "--base", Arch: "x86_64", BuildID: "00000000-0000-5000-8000-000000000000"}},
		{name: "none local, would download", base: gondolin.BaseOptions{Getenv: regEnv(reg.URL + "/registry.json")},
			want: &PlanBase{Download: true, Arch: "x86_64", BuildID: buildID, URL: reg.URL + "/x86.tar.gz"}},
		{name: "none local, registry lacks the arch", base: gondolin.BaseOptions{Getenv: regEnv(reg.URL + "/arm-only.json")},
			wantErr: "has no build for x86_64 (available: aarch64)"},
		{name: "none local, registry unreachable", base: gondolin.BaseOptions{Getenv: regEnv(reg.URL + "/missing.json")},
			wantErr: "404"},
		{name: "none and no download", base: gondolin.BaseOptions{Getenv: empty, NoDownload: true}, wantErr: "no Gondolin base bundle"},
		{name: "broken explicit base", base: gondolin.BaseOptions{Dir: filepath.Join(base, "missing")}, wantErr: "missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := options(src, filepath.Join(t.TempDir(), "out"))
			opts.Plain = false
			opts.Mode = ModeAssets
			opts.Base = tt.base
			plan, err := PlanConversion(context.Background(), opts)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if plan.Base == nil || *plan.Base != *tt.want {
				t.Errorf("plan.Base = %+v, want %+v", plan.Base, tt.want)
			}
			if !strings.Contains(fmt.Sprint(plan.Steps), "glue") || !strings.Contains(fmt.Sprint(plan.Steps), "assets") {
				t.Errorf("steps lack glue/assets: %v", plan.Steps)
			}
		})
	}
}

// TestRunFullDiskNamesIt: when the cache's or the temporary directory's
// filesystem fills up, the error names that one and how to make room
// there, not --out's.
func TestRunFullDiskNamesIt(t *testing.T) {
	require.Integration(t, "mounts a tmpfs and starts a registry")
	require.Root(t, "to mount a small tmpfs")
	small := func(t *testing.T) string {
		dir := t.TempDir()
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir).CombinedOutput(); err != nil {
			t.Fatalf("mount tmpfs: %v\n%s", err, out)
		}
		t.Cleanup(func() { exec.Command("umount", dir).Run() })
		return dir
	}
	big := make([]byte, 4<<20) // incompressible: the layer too is larger than the tmpfs
	rand.New(rand.NewSource(1)).Read(big)
	img := imagetest.New(t, imagetest.Spec{OCI: true,
		Layers: []v1.Layer{imagetest.NewLayer(t, layerTar(t, testtar.FileBytes("big", big)), imagetest.Gzip, true)}})

	t.Run("cache", func(t *testing.T) {
		src, _ := registrySourceOf(t, img)
		cache := small(t)
		_, err := Run(context.Background(), cachedOptions(src, filepath.Join(t.TempDir(), "out"), cache, nil))
		if err == nil || !strings.Contains(err.Error(), "out of disk space on the cache directory's filesystem ("+cache+")") ||
			!strings.Contains(strings.Join(hint.Of(err), "\n"), "docker2vm cache prune") {
			t.Fatalf("err = %v (hints %q), want the cache named", err, hint.Of(err))
		}
	})
	t.Run("temporary directory", func(t *testing.T) {
		layout := imagetest.WriteLayout(t, filepath.Join(t.TempDir(), "layout"), imagetest.LayoutEntry{Image: img})
		archive := imagetest.WriteOCIArchive(t, layout, filepath.Join(t.TempDir(), "img.tar.gz"), true)
		tmp := small(t)
		t.Setenv("TMPDIR", tmp)
		_, err := Run(context.Background(), options(image.Source{Kind: image.KindOCIArchive, Ref: archive}, filepath.Join(t.TempDir(), "out")))
		if err == nil || !strings.Contains(err.Error(), "out of disk space on the temporary directory's filesystem ("+tmp+")") ||
			!strings.Contains(strings.Join(hint.Of(err), "\n"), "TMPDIR") {
			t.Fatalf("err = %v (hints %q), want the temporary directory named", err, hint.Of(err))
		}
	})
}
