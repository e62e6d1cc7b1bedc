package app

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/docker2vm/docker2vm/convert"
	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/testenv"
	"github.com/docker2vm/docker2vm/internal/testenv/debian"
	"github.com/docker2vm/docker2vm/internal/testenv/gondolintest"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
	"github.com/docker2vm/docker2vm/internal/testenv/registrytest"
	"github.com/docker2vm/docker2vm/internal/testtar"
)

// These tests are the proof that a converted image is a working Gondolin
// guest: images are pushed to the real registry server, converted by the
// oci2gondolin command in assets mode with the fixture base bundle, and
// booted by the real Gondolin host under QEMU. Most run once per target
// architecture: linux/amd64 guests under qemu-system-x86_64 and
// linux/arm64 guests (with the arm64 fixture base) under
// qemu-system-aarch64, both TCG.

// forEachArch runs f as a subtest per target architecture.
func forEachArch(t *testing.T, f func(t *testing.T, arch string)) {
	t.Helper()
	for _, arch := range testenv.Arches {
		t.Run(arch, func(t *testing.T) { f(t, arch) })
	}
}

// unameM is what `uname -m` prints in a guest of arch.
var unameM = map[string]string{testenv.AMD64: "x86_64", testenv.ARM64: "aarch64"}

// helloImage holds one static binary for arch and nothing else: no shell,
// no /etc, no directories but the binary's.
func helloImage(t *testing.T, arch string) v1.Image {
	bin := filepath.Join(t.TempDir(), "hello")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./testdata/hello")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the hello binary: %v\n%s", err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	layer := testtar.Build(t, testtar.FileBytes("hello", b).Mode(0o755))
	img := imagetest.New(t, imagetest.Spec{OCI: true, Env: []string{"GREETING=from scratch"},
		Platform: v1.Platform{OS: "linux", Architecture: arch},
		Layers:   []v1.Layer{imagetest.NewLayer(t, layer, imagetest.Gzip, true)}})
	return imagetest.WithConfig(t, img, func(c *v1.Config) {
		c.Entrypoint = []string{"/hello"}
		c.Cmd = []string{"x", "y"}
	})
}

// convertAssets runs oci2gondolin --mode assets on the registry image ref
// for linux/<arch> with the base bundle base and returns the output
// directory.
func convertAssets(t *testing.T, arch, ref, base string, extra ...string) string {
	t.Helper()
	return convertSource(t, arch, base, append([]string{"--image", ref}, extra...)...)
}

// convertSource runs oci2gondolin --mode assets with args (the source
// flags and any others) for linux/<arch>, with --base base unless base is
// "" (the base is then found the way users' are), checks the result and
// returns the output directory.
func convertSource(t *testing.T, arch, base string, args ...string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "guest")
	args = append(args, "--platform", "linux/"+arch, "--mode", "assets", "--out", out, "--no-cache", "--quiet")
	if base != "" {
		args = append(args, "--base", base)
	}
	code, stdout, stderr := run(t, OCI2Gondolin(), args...)
	if code != 0 {
		t.Fatalf("oci2gondolin %s: exit %d\n%s", strings.Join(args, " "), code, stderr)
	}
	var res convert.Result
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("stdout is not one JSON document: %v\n%s", err, stdout)
	}
	if res.AssetManifestPath != filepath.Join(out, "manifest.json") {
		t.Errorf("assetManifestPath = %q", res.AssetManifestPath)
	}
	if res.Platform != "linux/"+arch {
		t.Errorf("platform = %q, want linux/%s", res.Platform, arch)
	}
	if got := gondolintest.BundleArch(t, out); got != arch {
		t.Errorf("manifest.json config.arch is for %s, want %s", got, arch)
	}
	for _, f := range []string{"vmlinuz-virt", "initramfs.cpio.lz4", "rootfs.ext4", "manifest.json", "meta.json"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("output lacks %s: %v", f, err)
		}
	}
	e2fsck := require.Tool(t, "e2fsck")
	if b, err := exec.Command(e2fsck, "-fn", filepath.Join(out, "rootfs.ext4")).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn: %v\n%s", err, b)
	}
	return out
}

// bootPrereqs starts a registry and returns it with the fixture base
// bundle for arch.
func bootPrereqs(t *testing.T, arch string) (*registrytest.Server, string) {
	t.Helper()
	require.Integration(t, "boots a VM")
	require.Tool(t, registrytest.Binary)
	return registrytest.Start(t, registrytest.Options{}), gondolintest.BaseBundleArch(t, arch)
}

func expectOutput(t *testing.T, results []gondolintest.ExecResult, i int, want string) {
	t.Helper()
	if i >= len(results) {
		t.Fatalf("only %d results", len(results))
	}
	r := results[i]
	if r.ExitCode != 0 || !strings.Contains(r.Stdout, want) {
		t.Errorf("%q: exit %d stdout %q stderr %q; want stdout containing %q", r.Argv, r.ExitCode, r.Stdout, r.Stderr, want)
	}
}

// TestBootBusyboxImage boots a two-layer busybox image of the target
// architecture: its files, ENV, WORKDIR, ENTRYPOINT and CMD through
// /usr/bin/docker2vm-entrypoint.
func TestBootBusyboxImage(t *testing.T) {
	forEachArch(t, testBootBusyboxImage)
}

func testBootBusyboxImage(t *testing.T, arch string) {
	reg, base := bootPrereqs(t, arch)
	ref := reg.Push(t, "busybox:e2e", imagetest.Busybox(t, gondolintest.BaseBusybox(t, base)), nil)
	out := convertAssets(t, arch, ref, base)
	gondolintest.Verify(t, out)

	res := gondolintest.Boot(t, out, gondolintest.BootOptions{},
		[]string{"/bin/busybox", "echo", "hello"},
		[]string{"/bin/sh", "-c", "echo \"$GREETING\""},
		[]string{"/usr/bin/docker2vm-entrypoint"},
		[]string{"/usr/bin/docker2vm-entrypoint", "given", "args"},
		[]string{"/bin/sh", "-c", "touch /root/written && ls /root/written"},
		[]string{"id", "-u"},
		[]string{"uname", "-m"},
		[]string{"cat", "/etc/os-release", "/srv/app.sh"},
	)
	expectOutput(t, res, 0, "hello")
	expectOutput(t, res, 1, "hello busybox")
	expectOutput(t, res, 2, "app says hello busybox from /srv as 0 with default-arg")
	expectOutput(t, res, 3, "app says hello busybox from /srv as 0 with given args")
	expectOutput(t, res, 4, "/root/written")
	expectOutput(t, res, 5, "0")
	expectOutput(t, res, 6, unameM[arch]+"\n")
	expectOutput(t, res, 7, "NAME=\"docker2vm sample\"\nID=busybox\n#!/bin/sh\necho \"app says")
}

// TestBootShellLessImage boots an image holding only a static Go binary:
// the base's busybox (of the target architecture) runs the init.
func TestBootShellLessImage(t *testing.T) {
	forEachArch(t, testBootShellLessImage)
}

func testBootShellLessImage(t *testing.T, arch string) {
	reg, base := bootPrereqs(t, arch)
	ref := reg.Push(t, "hello:e2e", helloImage(t, arch), nil)
	out := convertAssets(t, arch, ref, base)
	meta := readMeta(t, out)
	if !meta.RuntimeInjection.Applied || !contains(meta.RuntimeInjection.InjectedFiles, "/init") || len(meta.RuntimeInjection.InjectedSymlinks) == 0 {
		t.Errorf("meta.json runtimeInjection = %+v", meta.RuntimeInjection)
	}
	// The base's busybox is linked against musl, as alpine-base's: its
	// loader came along.
	if loader := "/lib/ld-musl-" + unameM[arch] + ".so.1"; !contains(meta.RuntimeInjection.InjectedFiles, loader) {
		t.Errorf("meta.json does not list the base's musl loader %s among the injected files: %v", loader, meta.RuntimeInjection.InjectedFiles)
	}
	res := gondolintest.Boot(t, out, gondolintest.BootOptions{},
		[]string{"/hello", "direct"},
		[]string{"/usr/bin/docker2vm-entrypoint"},
		[]string{"/usr/lib/docker2vm/bin/busybox", "uname", "-m"},
	)
	expectOutput(t, res, 0, "hello from a shell-less image: args=direct cwd=/ uid=0 greeting=from scratch")
	expectOutput(t, res, 1, "args=x,y")
	expectOutput(t, res, 2, unameM[arch]+"\n")
}

func TestBootRootfsModes(t *testing.T) {
	forEachArch(t, testBootRootfsModes)
}

func testBootRootfsModes(t *testing.T, arch string) {
	reg, base := bootPrereqs(t, arch)
	ref := reg.Push(t, "busybox:modes", imagetest.Busybox(t, gondolintest.BaseBusybox(t, base)), nil)

	// readonly: the image must already hold every directory Gondolin's init
	// creates and the bind targets; the guest cannot write to its root.
	ro := convertAssets(t, arch, ref, base, "--rootfs-mode", "readonly")
	var m struct {
		RuntimeDefaults struct{ RootfsMode string } `json:"runtimeDefaults"`
	}
	b, _ := os.ReadFile(filepath.Join(ro, "manifest.json"))
	if err := json.Unmarshal(b, &m); err != nil || m.RuntimeDefaults.RootfsMode != "readonly" {
		t.Fatalf("manifest runtimeDefaults = %+v (%v)", m, err)
	}
	res := gondolintest.Boot(t, ro, gondolintest.BootOptions{},
		[]string{"/bin/sh", "-c", "touch /srv/x 2>&1; echo rc=$?"},
		// /data is there: sandboxfs serves it (with ENOSYS for every request
		// under the harness's vfs: null, as Gondolin's does).
		[]string{"/bin/sh", "-c", "grep -c ' /data fuse.sandboxfs ' /proc/mounts && ls -d /etc/gondolin /etc/gondolin/mitm /var/log /home"},
	)
	expectOutput(t, res, 0, "rc=1")
	expectOutput(t, res, 1, "1\n/etc/gondolin\n/etc/gondolin/mitm\n")

	// cow: the guest writes to its root; the rootfs.ext4 on the host is untouched.
	cow := convertAssets(t, arch, ref, base, "--rootfs-mode", "cow")
	before, err := os.ReadFile(filepath.Join(cow, "rootfs.ext4"))
	if err != nil {
		t.Fatal(err)
	}
	res = gondolintest.Boot(t, cow, gondolintest.BootOptions{},
		[]string{"/bin/sh", "-c", "echo written > /srv/new && cat /srv/new && rm /srv/app.sh && ls /srv"},
	)
	expectOutput(t, res, 0, "written\nnew")
	after, _ := os.ReadFile(filepath.Join(cow, "rootfs.ext4"))
	if !bytes.Equal(before, after) {
		t.Errorf("cow mode changed rootfs.ext4 on the host")
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestBootFromImageStore imports the guest into a Gondolin image store two
// ways, with --tag and with Gondolin's own `gondolin image import`, and
// boots it by reference the way Gondolin users name images.
func TestBootFromImageStore(t *testing.T) {
	reg, base := bootPrereqs(t, testenv.AMD64)
	ref := reg.Push(t, "busybox:store", imagetest.Busybox(t, gondolintest.BaseBusybox(t, base)), nil)
	store := t.TempDir()
	t.Setenv("GONDOLIN_IMAGE_STORE", store)
	out := convertAssets(t, testenv.AMD64, ref, base, "--tag", "d2v-busybox:e2e")

	var m struct {
		BuildID string `json:"buildId"`
	}
	b, _ := os.ReadFile(filepath.Join(out, "manifest.json"))
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	link, err := os.Readlink(filepath.Join(store, "refs", "d2v-busybox", "e2e", "x86_64"))
	if err != nil || filepath.Base(link) != m.BuildID {
		t.Fatalf("ref symlink = %q, %v; want it to name object %s", link, err, m.BuildID)
	}

	// Gondolin's own importer must accept the same directory.
	if outp, err := gondolintest.CLI(t, []string{"GONDOLIN_IMAGE_STORE=" + store}, "image", "import", out, "--tag", "d2v-busybox:imported"); err != nil {
		t.Fatalf("gondolin image import: %v\n%s", err, outp)
	}
	res := gondolintest.Boot(t, "d2v-busybox:imported", gondolintest.BootOptions{HostEnv: []string{"GONDOLIN_IMAGE_STORE=" + store}},
		[]string{"/bin/sh", "-c", "cat /etc/os-release; echo $GREETING"},
	)
	expectOutput(t, res, 0, "hello busybox")
	res = gondolintest.Boot(t, "d2v-busybox:e2e", gondolintest.BootOptions{HostEnv: []string{"GONDOLIN_IMAGE_STORE=" + store}},
		[]string{"/usr/bin/docker2vm-entrypoint", "from-store"},
	)
	expectOutput(t, res, 0, "with from-store")
}

// TestBootDebianImage converts a three-layer Debian minbase (whiteouts of a
// file and a directory, an opaque directory, a setuid binary, a file
// capability) of the target architecture and checks the merged tree from
// inside the running guest, where Debian's dynamically linked binaries
// (coreutils, perl) run.
func TestBootDebianImage(t *testing.T) {
	forEachArch(t, testBootDebianImage)
}

// getxattrSyscall is the getxattr(2) system call number per architecture.
var getxattrSyscall = map[string]string{testenv.AMD64: "191", testenv.ARM64: "8"}

func testBootDebianImage(t *testing.T, arch string) {
	reg, base := bootPrereqs(t, arch)
	img, facts := debian.ImageArch(t, arch, imagetest.Gzip)
	ref := reg.Push(t, "debian:minbase", img, nil)
	out := convertAssets(t, arch, ref, base)

	// The capability as the kernel's ext4 driver returns it: perl-base's
	// syscall(2) calls getxattr in the guest.
	getcap := `my ($p, $a, $b) = ("` + facts.CapPath + `", "security.capability", "\0" x 64); ` +
		`my $n = syscall(` + getxattrSyscall[arch] + `, $p, $a, $b, 64); die "getxattr: $!\n" if $n < 0; print unpack("H*", substr($b, 0, $n)), "\n";`
	res := gondolintest.Boot(t, out, gondolintest.BootOptions{},
		[]string{"cat", "/etc/debian_version"},
		[]string{"/bin/sh", "-c", "for p in " + strings.Join(facts.WhitedOut, " ") + "; do test -e $p && echo present $p || echo absent $p; done"},
		[]string{"ls", "-A", facts.OpaqueDir},
		[]string{"stat", "-c", "%a %U", facts.SetuidPath},
		[]string{"perl", "-e", getcap},
		[]string{"id", "-u"},
		[]string{"/bin/sh", "-c", "echo $DOCKER2VM_TEST; echo $PATH"},
		[]string{"/bin/sh", "-c", "echo 'deb written' > /root/f && cat /root/f"},
		[]string{"/bin/sh", "-c", "uname -m; cat /etc/motd; head -c 20 /usr/bin/ls | od -An -tx1 | tr -d ' \\n'; echo"},
	)
	expectOutput(t, res, 0, facts.DebianVersion)
	for _, p := range facts.WhitedOut {
		expectOutput(t, res, 1, "absent "+p)
	}
	if got := strings.TrimSpace(res[2].Stdout); got != filepath.Base(facts.NewInOpaque) {
		t.Errorf("ls %s = %q, want only %s", facts.OpaqueDir, got, filepath.Base(facts.NewInOpaque))
	}
	expectOutput(t, res, 3, "4755 root")
	expectOutput(t, res, 4, hex.EncodeToString(facts.CapValue))
	expectOutput(t, res, 5, "0")
	expectOutput(t, res, 6, "debian\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	expectOutput(t, res, 7, "deb written")
	// Layer 2's /etc/motd, and the header of /usr/bin/ls: a PIE (ET_DYN)
	// for the target's machine (0x3e x86-64, 0xb7 AArch64).
	elf := "7f454c46020101000000000000000000" + "0300" + map[string]string{testenv.AMD64: "3e00", testenv.ARM64: "b700"}[arch]
	expectOutput(t, res, 8, unameM[arch]+"\ndocker2vm test image: /etc/motd as changed by layer 2.\n"+elf+"\n")
}

// TestAssetsFromResultCache converts the same registry image with the blob
// and result caches on: cold, again into a new --out (a copy of the cached
// rootfs.ext4), and again into that same --out (the file kept). Each time
// Gondolin itself must verify the guest directory: manifest.json's
// checksums, the rootfs's taken from the cache entry on hits, must be those
// of the files.
func TestAssetsFromResultCache(t *testing.T) {
	reg, base := bootPrereqs(t, testenv.AMD64)
	require.Tool(t, "node")
	ref := reg.Push(t, "busybox:cached", imagetest.Busybox(t, gondolintest.BaseBusybox(t, base)), nil)
	cache := t.TempDir()
	convert := func(out string) string {
		t.Helper()
		args := []string{"--image", ref, "--platform", "linux/amd64", "--mode", "assets", "--base", base, "--out", out, "--cache-dir", cache}
		code, _, stderr := run(t, OCI2Gondolin(), args...)
		if code != 0 {
			t.Fatalf("oci2gondolin %s: exit %d\n%s", strings.Join(args, " "), code, stderr)
		}
		gondolintest.Verify(t, out)
		return stderr
	}
	dir := t.TempDir()
	if p := convert(filepath.Join(dir, "a")); strings.Contains(p, "identical conversion") {
		t.Fatalf("the first conversion was a hit:\n%s", p)
	}
	if p := convert(filepath.Join(dir, "b")); !strings.Contains(p, "reused the result of an earlier identical conversion") {
		t.Fatalf("the second conversion was not a hit:\n%s", p)
	}
	if p := convert(filepath.Join(dir, "b")); !strings.Contains(p, "kept the unchanged rootfs.ext4") {
		t.Fatalf("the third conversion did not keep the output:\n%s", p)
	}
}
