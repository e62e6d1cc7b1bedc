// Package gondolintest boots guests under the real Gondolin host for the
// integration tests and the demo: a fixture Gondolin base bundle, boots of
// an asset directory or an image ref with the Node.js harness in
// testdata/gondolin-host (Boot, Run), and Gondolin's own CLI (CLI, RunCLI,
// Verify).
//
// The base bundle is built from Debian packages: the cloud kernel, a
// busybox initramfs, a busybox rootfs.ext4 with our stand-ins for
// Gondolin's agents (internal/guestagent) at /usr/bin/sandboxd and
// /usr/bin/sandboxfs, Gondolin's own init scripts, and manifest.json, for
// x86_64 or aarch64 (Debian's arm64 packages through dpkg multiarch). See
// docs/gondolin-contract.md for what each piece must satisfy.
package gondolintest

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/docker2vm/docker2vm/gondolin"
	"github.com/docker2vm/docker2vm/gondolin/guest"
	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/testenv"
	"github.com/docker2vm/docker2vm/internal/testenv/qemuuser"
)

// initramfsPrelude is the initramfs /init: it makes up for what the
// fixture's Debian kernel and an arm64 guest on an x86_64 host lack, then
// runs Gondolin's own initramfs init.
//
//go:embed testdata/initramfs-prelude.sh
var initramfsPrelude []byte

// bundleFormat is part of every cache key: bump it when the bundle layout
// or build steps change in a way the inputs' hashes do not capture.
const bundleFormat = "docker2vm-testenv-bundle-v5"

// kernelMetaPackage is the Debian package whose dependency names the
// kernel image package to use (linux-image-cloud-amd64, -arm64).
func kernelMetaPackage(a *testenv.Arch) string { return "linux-image-cloud-" + a.Name }

// kernelModules are loaded by both inits; their dependencies are added from
// modules.dep. Both cloud kernels build ext4 and the PCI host bridge in
// and the virtio drivers as modules; Gondolin attaches virtio devices
// over PCI on both q35 (x86_64) and virt (aarch64).
var kernelModules = []string{
	"virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
	"virtio_blk", "virtio_console", "virtio-rng", "virtio_net", "fuse", "overlay",
}

// BundlePackages lists the Debian packages BaseBundle needs
// installed (the kernel and, for arm64, busybox are fetched with apt-get
// download at test time; a foreign architecture also needs qemu-user,
// see qemuuser.Path, to list busybox's applets).
const BundlePackages = "busybox-static kmod e2fsprogs lz4 dpkg apt " + MuslBusyboxPackages

// BootPackages lists the Debian packages Boot needs besides
// Node.js and npm to boot x86_64 guests; aarch64 guests need
// qemu-system-arm instead of qemu-system-x86.
const BootPackages = "qemu-system-x86 qemu-utils"

// Bundle asset names (Gondolin's defaults, as package gondolin names them).
const (
	BundleKernel    = gondolin.KernelName
	BundleInitramfs = gondolin.InitramfsName
	BundleRootfs    = gondolin.RootfsName
	BundleManifest  = gondolin.ManifestName
)

var (
	bundleMu   sync.Mutex
	bundleDirs = map[string]string{} // by arch
	sandboxdMu sync.Mutex
	sandboxds  = map[string]string{} // by arch
)

// BaseBundle is BaseBundleArch(t, testenv.AMD64).
func BaseBundle(t testenv.TB) string {
	t.Helper()
	return BaseBundleArch(t, testenv.AMD64)
}

// BaseBundleArch returns a directory holding a bootable Gondolin base
// bundle for arch ("amd64" or "arm64"): vmlinuz-virt, initramfs.cpio.lz4,
// rootfs.ext4 and manifest.json (config.arch x86_64 or aarch64). Callers
// must treat it as read-only. It is built once per architecture and set of
// inputs and cached in testenv.CacheDir (and in memory for the rest of the
// test process). arm64 takes its packages from Debian's arm64 archive,
// which apt must know (dpkg --add-architecture arm64), and lists busybox's
// applets with qemu-user (qemuuser.Path). It skips the test when a tool is
// missing, except under CI, where it fails.
func BaseBundleArch(t testenv.TB, arch string) string {
	t.Helper()
	a := testenv.ArchOf(t, arch)
	require.Integration(t, "builds the Gondolin base bundle")
	cc := "gcc"
	if !a.Native() {
		cc = gnuTriplet(a) + "-gcc"
	}
	tools := require.Tools(t, BundlePackages+" nodejs npm", "go", "apt-get", "apt-cache", "dpkg", "dpkg-deb", "depmod", "mke2fs", "lz4", "node", "npm",
		"make", "tar", "bzip2", cc)
	var qemuUser string
	if !a.Native() {
		qemuUser = qemuuser.Path(t, a.Name)
	}
	requireDebArch(t, a)
	bundleMu.Lock()
	defer bundleMu.Unlock()
	if dir := bundleDirs[a.Name]; dir != "" {
		return dir
	}
	start := time.Now()
	b := &builder{t: t, tools: tools, cache: testenv.CacheDir(), arch: a, qemuUser: qemuUser, harness: ensureHarness(t, tools)}
	dir, err := b.build()
	if err != nil {
		t.Fatalf("gondolintest.BaseBundleArch(%s): %v", a.Name, err)
	}
	t.Logf("gondolintest.BaseBundleArch(%s): %s (%s)", a.Name, dir, time.Since(start).Round(time.Millisecond))
	bundleDirs[a.Name] = dir
	return dir
}

// Sandboxd builds the test guest agent
// (internal/guestagent/cmd/sandboxd) as a static linux binary for arch and
// returns its path (read-only, cached for the test process).
func Sandboxd(t testenv.TB, arch string) string {
	t.Helper()
	a := testenv.ArchOf(t, arch)
	tools := require.Tools(t, "golang", "go")
	sandboxdMu.Lock()
	defer sandboxdMu.Unlock()
	if p := sandboxds[a.Name]; p != "" {
		return p
	}
	b := &builder{t: t, tools: tools, cache: testenv.CacheDir(), arch: a}
	p, err := b.sandboxd()
	if err != nil {
		t.Fatalf("gondolintest.Sandboxd(%s): %v", a.Name, err)
	}
	sandboxds[a.Name] = p
	return p
}

// BaseBusybox returns a static busybox for the architecture of the base
// bundle in baseDir: the one its initramfs runs (the base's rootfs has a
// musl-linked one, which needs the base's loader), for test images that
// must run on their own.
func BaseBusybox(t testenv.TB, baseDir string) []byte {
	t.Helper()
	a := testenv.ArchOf(t, BundleArch(t, baseDir))
	tools := require.Tools(t, "dpkg apt", "apt-get", "apt-cache", "dpkg-deb")
	b := &builder{t: t, tools: tools, cache: testenv.CacheDir(), arch: a}
	p, err := b.busybox()
	if err != nil {
		t.Fatalf("gondolintest.BaseBusybox: %v", err)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

type builder struct {
	t     testenv.TB
	tools map[string]string
	cache string
	arch  *testenv.Arch // target of what is built
	// qemuUser runs the target's programs when it is not this host's.
	qemuUser string
	// harness is the Gondolin host's directory (HostDir), whose
	// node_modules hold Gondolin's init scripts.
	harness string
}

func (b *builder) logf(format string, args ...any) {
	b.t.Helper()
	b.t.Logf(format, args...)
}

func (b *builder) run(dir string, env []string, name string, args ...string) ([]byte, error) {
	path := b.tools[name]
	if path == "" {
		path = name
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, testenv.Tail(stderr.String(), 4000))
	}
	return out, nil
}

// lock takes an exclusive flock on the cache so that test binaries of
// different packages running in parallel do not build the same thing twice.
func (b *builder) lock() (unlock func(), err error) { return b.lockFile(".lock") }

func (b *builder) lockFile(name string) (unlock func(), err error) {
	return testenv.Lock(filepath.Join(b.cache, name))
}

func (b *builder) build() (string, error) {
	unlock, err := b.lock()
	if err != nil {
		return "", err
	}
	defer unlock()

	agent, err := b.sandboxd()
	if err != nil {
		return "", err
	}
	fsAgent, err := b.agent("sandboxfs")
	if err != nil {
		return "", err
	}
	kernel, err := b.kernel()
	if err != nil {
		return "", err
	}
	busybox, err := b.busybox()
	if err != nil {
		return "", err
	}
	muslBusybox, muslLoader, err := b.muslBusybox()
	if err != nil {
		return "", err
	}
	inits, err := b.gondolinInits()
	if err != nil {
		return "", err
	}

	h := sha256.New()
	fmt.Fprintf(h, "%s\narch=%s\n", bundleFormat, b.arch.Gondolin)
	for _, in := range []struct {
		name string
		data []byte
	}{{"initramfs-prelude", initramfsPrelude}, {"initramfs-init", inits.Initramfs}, {"rootfs-init", inits.Rootfs}} {
		fmt.Fprintf(h, "%s=%x\n", in.name, sha256.Sum256(in.data))
	}
	for _, f := range []string{agent, fsAgent, busybox, muslBusybox, muslLoader, filepath.Join(kernel.dir, "id")} {
		sum, err := fileSHA256(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s=%s\n", filepath.Base(f), sum)
	}
	fmt.Fprintf(h, "modules=%s\n", strings.Join(kernelModules, ","))
	key := hex.EncodeToString(h.Sum(nil))[:20]
	out := filepath.Join(b.cache, "bundles", b.arch.Name+"-"+key)
	if _, err := os.Stat(filepath.Join(out, BundleManifest)); err == nil {
		return out, nil
	}
	b.logf("building the %s Gondolin base bundle %s (kernel %s)", b.arch.Gondolin, out, kernel.release)

	tmp, err := os.MkdirTemp(filepath.Join(b.cache), "bundle-tmp-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	bundle := filepath.Join(tmp, "bundle")
	if err := os.MkdirAll(bundle, 0o755); err != nil {
		return "", err
	}

	// vmlinuz-virt
	if err := copyFile(filepath.Join(kernel.dir, "vmlinuz"), filepath.Join(bundle, BundleKernel), 0o644); err != nil {
		return "", err
	}

	applets, err := b.applets(busybox)
	if err != nil {
		return "", err
	}
	muslApplets, err := b.appletsVia(muslLoader, muslBusybox)
	if err != nil {
		return "", err
	}
	for _, tool := range guest.InitTools {
		if !slices.ContainsFunc(muslApplets, func(a string) bool { return path.Base(a) == tool }) {
			return "", fmt.Errorf("the musl busybox has no %s, which Gondolin's init runs", tool)
		}
	}

	// initramfs.cpio.lz4
	irfs := newTree()
	irfs.base(busybox, applets)
	irfs.file("init", 0o755, initramfsPrelude, "")
	irfs.file("gondolin-init", 0o755, inits.Initramfs, "")
	irfs.dir("newroot", 0o755)
	irfs.dev("dev/console", 0o600, 5, 1)
	irfs.dev("dev/null", 0o666, 1, 3)
	irfs.dev("dev/kmsg", 0o644, 1, 11)
	if err := irfs.addDir(filepath.Join(kernel.dir, "modules"), "lib/modules"); err != nil {
		return "", err
	}
	var cpio bytes.Buffer
	if err := irfs.writeCpio(&cpio); err != nil {
		return "", err
	}
	cpioPath := filepath.Join(tmp, "initramfs.cpio")
	if err := os.WriteFile(cpioPath, cpio.Bytes(), 0o644); err != nil {
		return "", err
	}
	if _, err := b.run(tmp, nil, "lz4", "-l", "-9", "-q", "-f", cpioPath, filepath.Join(bundle, BundleInitramfs)); err != nil {
		return "", err
	}

	// rootfs.ext4
	// The rootfs's busybox is dynamically linked against musl, as
	// alpine-base's: /lib/ld-musl-ARCH.so.1 and Alpine's libc name for it.
	rfs := newTree()
	rfs.base(muslBusybox, muslApplets)
	loaderName := "ld-musl-" + b.arch.Gondolin + ".so.1"
	rfs.file("lib/"+loaderName, 0o755, nil, muslLoader)
	rfs.symlink("lib/libc.musl-"+b.arch.Gondolin+".so.1", loaderName)
	rfs.file("init", 0o755, inits.Rootfs, "")
	rfs.file("usr/bin/sandboxd", 0o755, nil, agent)
	rfs.file("usr/bin/sandboxfs", 0o755, nil, fsAgent)
	// Everything Gondolin's rootfs modes and init need, pre-created so the
	// image also boots read-only.
	for _, d := range []string{"proc", "sys", "dev", "run", "tmp", "var/tmp", "var/cache", "var/log", "root", "home", "data", "etc/gondolin", "etc/gondolin/mitm", "etc/profile.d", "mnt"} {
		rfs.dir(d, 0o755)
	}
	rfs.entries["tmp"].mode = 0o1777
	rfs.entries["var/tmp"].mode = 0o1777
	rfs.entries["root"].mode = 0o700
	rfs.file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"), "")
	rfs.file("etc/group", 0o644, []byte("root:x:0:\ntty:x:5:\nnogroup:x:65534:\n"), "")
	rfs.file("etc/hostname", 0o644, []byte("gondolin\n"), "")
	rfs.file("etc/hosts", 0o644, []byte("127.0.0.1 localhost\n::1 localhost\n"), "")
	rfs.file("etc/os-release", 0o644, []byte("ID=docker2vm-testenv\nNAME=\"docker2vm test base (busybox)\"\n"), "")
	if err := rfs.addDir(filepath.Join(kernel.dir, "modules"), "lib/modules"); err != nil {
		return "", err
	}
	stage := filepath.Join(tmp, "rootfs")
	if err := rfs.materialize(stage); err != nil {
		return "", err
	}
	uuid := fixtureUUID("rootfs\n" + key)
	if _, err := b.run(tmp, []string{"E2FSPROGS_FAKE_TIME=" + fmt.Sprint(epoch)}, "mke2fs", "-q", "-F", "-t", "ext4",
		"-O", "^has_journal", "-m", "0", "-L", "gondolin-root", "-U", uuid,
		"-E", "root_owner=0:0,hash_seed="+fixtureUUID("hash\n"+key),
		"-d", stage, filepath.Join(bundle, BundleRootfs), "64M"); err != nil {
		return "", err
	}

	if err := writeManifest(bundle, b.arch.Gondolin, "busybox"); err != nil {
		return "", err
	}

	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(bundle, out); err != nil {
		return "", err
	}
	return out, nil
}

// ---------------------------------------------------------------- inputs

// initScripts are Gondolin's own init scripts.
type initScripts struct {
	Rootfs, Initramfs []byte
}

// gondolinInits reads Gondolin's rootfs and initramfs init scripts as the
// installed package exports them (dist/src/alpine/init-scripts.js), so
// that the fixture runs exactly what Gondolin's image builder puts into
// alpine-base, and a Gondolin upgrade tests the contract again.
func (b *builder) gondolinInits() (*initScripts, error) {
	mod := filepath.Join(b.harness, "node_modules", "@earendil-works", "gondolin", "dist", "src", "alpine", "init-scripts.js")
	script := `import(require("url").pathToFileURL(process.argv[1]).href).then((m) => {
  if (typeof m.ROOTFS_INIT_SCRIPT !== "string" || typeof m.INITRAMFS_INIT_SCRIPT !== "string") {
    throw new Error("no ROOTFS_INIT_SCRIPT and INITRAMFS_INIT_SCRIPT exported");
  }
  process.stdout.write(JSON.stringify({rootfs: m.ROOTFS_INIT_SCRIPT, initramfs: m.INITRAMFS_INIT_SCRIPT}));
})`
	out, err := b.run(b.harness, nil, "node", "-e", script, mod)
	if err != nil {
		return nil, fmt.Errorf("reading Gondolin's init scripts from %s: %w", mod, err)
	}
	var v struct{ Rootfs, Initramfs string }
	if err := json.Unmarshal(out, &v); err != nil {
		return nil, fmt.Errorf("reading Gondolin's init scripts from %s: %w", mod, err)
	}
	if !strings.Contains(v.Rootfs, "exec /usr/bin/sandboxd") || !strings.Contains(v.Initramfs, "switch_root") {
		return nil, fmt.Errorf("%s: the init scripts are not Gondolin's rootfs and initramfs inits", mod)
	}
	return &initScripts{Rootfs: []byte(v.Rootfs), Initramfs: []byte(v.Initramfs)}, nil
}

// sandboxd builds the guest agent into the cache and returns its path. The
// cache key hashes the agent's sources (internal/guestagent, which imports
// only the standard library), go.mod and the Go version, so a warm call
// costs one "go env" instead of a link.
func (b *builder) sandboxd() (string, error) { return b.agent("sandboxd") }

// agent builds the guest agent stand-in internal/guestagent/cmd/NAME
// (sandboxd or sandboxfs) as sandboxd does.
func (b *builder) agent(name string) (string, error) {
	root, err := testenv.ModuleRoot(b.tools["go"])
	if err != nil {
		return "", err
	}
	goVersion, err := b.run(root, nil, "go", "env", "GOVERSION")
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\nlinux/%s static\n", strings.TrimSpace(string(goVersion)), b.arch.Name)
	var files []string
	src := filepath.Join(root, "internal", "guestagent")
	err = filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if !info.IsDir() && strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	files = append(files, filepath.Join(root, "go.mod"))
	sort.Strings(files)
	for _, f := range files {
		sum, err := fileSHA256(f)
		if err != nil {
			return "", err
		}
		rel, _ := filepath.Rel(root, f)
		fmt.Fprintf(h, "%s %s\n", rel, sum)
	}
	final := filepath.Join(b.cache, "sandboxd", hex.EncodeToString(h.Sum(nil))[:20], name)
	if isStatic(final, b.arch.Machine) {
		return final, nil
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return "", err
	}
	tmp := final + ".tmp"
	if _, err := b.run(root, []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=" + b.arch.Name}, "go", "build",
		"-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", tmp, "./internal/guestagent/cmd/"+name); err != nil {
		return "", err
	}
	if !isStatic(tmp, b.arch.Machine) {
		return "", fmt.Errorf("%s is not a static linux/%s binary", tmp, b.arch.Name)
	}
	return final, os.Rename(tmp, final)
}

type kernelDir struct {
	dir     string // holds vmlinuz, modules/<release>/..., id
	release string
}

// kernel downloads (apt-get download) and unpacks the Debian cloud kernel,
// keeping vmlinuz (an x86 bzImage, a plain arm64 Image) and the modules we
// load (with their dependencies and a fresh modules.dep). Cached per .deb
// checksum. DOCKER2VM_TEST_KERNEL_DEB_<ARCH> (…_AMD64, …_ARM64; for amd64
// also DOCKER2VM_TEST_KERNEL_DEB) names a kernel .deb to use instead.
func (b *builder) kernel() (*kernelDir, error) {
	deb := os.Getenv("DOCKER2VM_TEST_KERNEL_DEB_" + strings.ToUpper(b.arch.Name))
	if deb == "" && b.arch.Name == testenv.AMD64 {
		deb = os.Getenv("DOCKER2VM_TEST_KERNEL_DEB")
	}
	if deb == "" {
		var err error
		if deb, err = b.aptDownload("kernel", b.kernelPackage); err != nil {
			return nil, err
		}
	}
	debSum, err := fileSHA256(deb)
	if err != nil {
		return nil, err
	}
	modKey := sha256.Sum256([]byte(debSum + "\n" + strings.Join(kernelModules, ",")))
	dir := filepath.Join(b.cache, "kernel", hex.EncodeToString(modKey[:])[:20])
	if rel, err := os.ReadFile(filepath.Join(dir, "id")); err == nil {
		return &kernelDir{dir: dir, release: strings.Fields(string(rel))[0]}, nil
	}
	b.logf("unpacking %s", filepath.Base(deb))
	tmp, err := os.MkdirTemp(b.cache, "kernel-tmp-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	x := filepath.Join(tmp, "x")
	if _, err := b.run(tmp, nil, "dpkg-deb", "-x", deb, x); err != nil {
		return nil, err
	}
	rels, _ := filepath.Glob(filepath.Join(x, "lib", "modules", "*"))
	if len(rels) != 1 {
		return nil, fmt.Errorf("%s: want one lib/modules/<release>, found %v", deb, rels)
	}
	release := filepath.Base(rels[0])
	if _, err := b.run(tmp, nil, "depmod", "-b", x, release); err != nil {
		return nil, err
	}
	deps, err := readModulesDep(filepath.Join(rels[0], "modules.dep"))
	if err != nil {
		return nil, err
	}
	byName := map[string]string{}
	for rel := range deps {
		byName[modName(rel)] = rel
	}
	want := map[string]bool{}
	var add func(rel string)
	add = func(rel string) {
		if want[rel] {
			return
		}
		want[rel] = true
		for _, d := range deps[rel] {
			add(d)
		}
	}
	for _, m := range kernelModules {
		rel, ok := byName[strings.ReplaceAll(m, "-", "_")]
		if !ok {
			continue // built into this kernel
		}
		add(rel)
	}
	stage := filepath.Join(tmp, "k")
	modDir := filepath.Join(stage, "modules", release)
	for rel := range want {
		if err := copyFile(filepath.Join(rels[0], rel), filepath.Join(modDir, rel), 0o644); err != nil {
			return nil, err
		}
	}
	for _, f := range []string{"modules.builtin", "modules.builtin.modinfo", "modules.order"} {
		if _, err := os.Stat(filepath.Join(rels[0], f)); err == nil {
			if err := copyFile(filepath.Join(rels[0], f), filepath.Join(modDir, f), 0o644); err != nil {
				return nil, err
			}
		}
	}
	// depmod wants lib/modules/<release> under its base directory.
	if err := os.MkdirAll(filepath.Join(tmp, "dm", "lib"), 0o755); err != nil {
		return nil, err
	}
	if err := os.Symlink(filepath.Join(stage, "modules"), filepath.Join(tmp, "dm", "lib", "modules")); err != nil {
		return nil, err
	}
	if _, err := b.run(tmp, nil, "depmod", "-b", filepath.Join(tmp, "dm"), release); err != nil {
		return nil, err
	}
	if err := copyFile(filepath.Join(x, "boot", "vmlinuz-"+release), filepath.Join(stage, "vmlinuz"), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(stage, "id"), []byte(release+" "+debSum+"\n"), 0o644); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, err
	}
	if err := os.Rename(stage, dir); err != nil {
		return nil, err
	}
	return &kernelDir{dir: dir, release: release}, nil
}

// kernelPackage resolves the versioned kernel image package that
// linux-image-cloud-<arch> depends on (without the :<arch> qualifier).
func (b *builder) kernelPackage() (string, error) {
	meta := b.arch.DebPackage(kernelMetaPackage(b.arch))
	out, err := b.run("", nil, "apt-cache", "depends", meta)
	if err != nil {
		return "", fmt.Errorf("%v (is the apt package index present? run apt-get update)", err)
	}
	re := regexp.MustCompile(`^(linux-image-[0-9].*-cloud-` + b.arch.Name + `)(:` + b.arch.Name + `)?$`)
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "Depends:" {
			if m := re.FindStringSubmatch(f[1]); m != nil {
				return m[1], nil
			}
		}
	}
	return "", fmt.Errorf("apt-cache depends %s names no linux-image-*-cloud-%s:\n%s", meta, b.arch.Name, out)
}

// aptDownload fetches the candidate version of a package of the target
// architecture into the cache, reusing a cached .deb whose SHA256 matches
// the package index. resolve returns the package name, unqualified.
func (b *builder) aptDownload(name string, resolve func() (string, error)) (string, error) {
	pkg, version, sum, err := b.aptResolve(name, resolve)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(b.cache, "debs")
	final := filepath.Join(dir, pkg+"_"+strings.ReplaceAll(version, ":", "%3a")+"_"+b.arch.Name+".deb")
	if got, err := fileSHA256(final); err == nil && (sum == "" || got == sum) {
		return final, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(dir, "dl-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	// The file is written directly by root when running as root; silence
	// apt's "unsandboxed download" warning by not dropping privileges.
	args := []string{"download", "-q", b.arch.DebPackage(pkg) + "=" + version}
	if os.Geteuid() == 0 {
		args = append([]string{"-o", "APT::Sandbox::User=root"}, args...)
	}
	b.logf("apt-get download %s=%s", b.arch.DebPackage(pkg), version)
	if _, err := b.run(tmp, nil, "apt-get", args...); err != nil {
		return "", err
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("apt-get download %s: got %v", pkg, debs)
	}
	if sum != "" {
		if got, err := fileSHA256(debs[0]); err != nil || got != sum {
			return "", fmt.Errorf("apt-get download %s: sha256 %s, index says %s (%v)", pkg, got, sum, err)
		}
	}
	return final, os.Rename(debs[0], final)
}

// aptResolve returns the package, candidate version and .deb SHA256 for
// name. apt-cache needs about a second per call, so answers are cached
// until the package lists in /var/lib/apt/lists change.
func (b *builder) aptResolve(name string, resolve func() (string, error)) (pkg, version, sum string, err error) {
	lists, _ := filepath.Glob("/var/lib/apt/lists/*Packages*")
	h := sha256.New()
	for _, l := range lists {
		if st, err := os.Stat(l); err == nil {
			fmt.Fprintf(h, "%s %d %d\n", l, st.Size(), st.ModTime().UnixNano())
		}
	}
	memo := filepath.Join(b.cache, "debs", "resolved-"+name+"-"+b.arch.Name+"-"+hex.EncodeToString(h.Sum(nil))[:16])
	if data, err := os.ReadFile(memo); err == nil {
		if f := strings.Fields(string(data)); len(f) == 3 {
			return f[0], f[1], f[2], nil
		}
	}
	if pkg, err = resolve(); err != nil {
		return
	}
	out, err := b.run("", nil, "apt-cache", "show", "--no-all-versions", b.arch.DebPackage(pkg))
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "Version: "); ok && version == "" {
			version = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "SHA256: "); ok && sum == "" {
			sum = strings.TrimSpace(v)
		}
	}
	if version == "" || sum == "" {
		return "", "", "", fmt.Errorf("apt-cache show %s: no Version/SHA256", pkg)
	}
	if len(lists) > 0 {
		_ = os.MkdirAll(filepath.Dir(memo), 0o755)
		_ = os.WriteFile(memo, []byte(pkg+" "+version+" "+sum+"\n"), 0o644)
	}
	return pkg, version, sum, nil
}

// busybox returns a statically linked busybox for the target: the host's
// (package busybox-static) when it is one, else one unpacked from apt-get
// download busybox-static:<arch>.
func (b *builder) busybox() (string, error) {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if isStatic(p, b.arch.Machine) {
			return p, nil
		}
	}
	deb, err := b.aptDownload("busybox-static", func() (string, error) { return "busybox-static", nil })
	if err != nil {
		return "", fmt.Errorf("no static busybox on the host and apt-get download failed: %w", err)
	}
	sum, err := fileSHA256(deb)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(b.cache, "busybox", sum[:20])
	p := filepath.Join(dir, "bin", "busybox")
	if isStatic(p, b.arch.Machine) {
		return p, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "tmp-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if _, err := b.run("", nil, "dpkg-deb", "-x", deb, tmp); err != nil {
		return "", err
	}
	if !isStatic(filepath.Join(tmp, "bin", "busybox"), b.arch.Machine) {
		return "", fmt.Errorf("%s: no static %s bin/busybox", deb, b.arch.Name)
	}
	_ = os.RemoveAll(dir) // an incomplete earlier attempt
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	return p, nil
}

// applets lists busybox's applets with their install paths (bin/sh, ...),
// running a foreign busybox with qemu-user.
func (b *builder) applets(busybox string) ([]string, error) { return b.appletsVia("", busybox) }

// appletsVia is applets for a dynamically linked busybox, run through its
// loader (musl's runs programs given as its first argument).
func (b *builder) appletsVia(loader, busybox string) ([]string, error) {
	name, args := busybox, []string{"--list-full"}
	if loader != "" {
		name, args = loader, append([]string{busybox}, args...)
	}
	if !b.arch.Native() {
		args = append([]string{name}, args...)
		name = b.qemuUser
	}
	out, err := b.run("", nil, name, args...)
	if err != nil {
		return nil, err
	}
	var list []string
	for _, l := range strings.Split(string(out), "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.Contains(l, "..") && !strings.HasPrefix(l, "/") {
			list = append(list, l)
		}
	}
	if len(list) < 50 {
		return nil, fmt.Errorf("%s --list-full: only %d applets", busybox, len(list))
	}
	return list, nil
}

func readModulesDep(path string) (map[string][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	deps := map[string][]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[mod] = strings.Fields(rest)
	}
	return deps, sc.Err()
}

// modName maps kernel/drivers/char/hw_random/virtio-rng.ko to virtio_rng.
func modName(rel string) string {
	base := filepath.Base(rel)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		base = strings.TrimSuffix(base, ext)
	}
	return strings.ReplaceAll(strings.TrimSuffix(base, ".ko"), "-", "_")
}

// ---------------------------------------------------------------- manifest

// writeManifest writes the manifest.json of the asset directory dir (its
// assets under Gondolin's default names) with package gondolin's types and
// build id: the fixtures' manifests are what docker2vm writes, and
// Gondolin's own CLI checks them (Verify).
func writeManifest(dir, arch, distro string) error {
	var sums gondolin.Checksums
	for _, a := range []struct {
		name string
		sum  *string
	}{{BundleKernel, &sums.Kernel}, {BundleInitramfs, &sums.Initramfs}, {BundleRootfs, &sums.Rootfs}} {
		s, err := fileSHA256(filepath.Join(dir, a.name))
		if err != nil {
			return err
		}
		*a.sum = s
	}
	defaults := &gondolin.RuntimeDefaults{RootfsMode: gondolin.RootfsCOW}
	m := &gondolin.Manifest{
		Version:         1,
		BuildID:         gondolin.BuildID(sums, arch),
		Config:          gondolin.ManifestConfig{Arch: arch, Distro: distro, RuntimeDefaults: defaults},
		RuntimeDefaults: defaults,
		BuildTime:       time.Now().UTC().Format("2006-01-02T15:04:05.000Z"),
		Assets:          gondolin.DefaultAssets(),
		Checksums:       sums,
	}
	if err := m.Validate(); err != nil {
		return fmt.Errorf("the fixture's manifest is invalid: %w", err)
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, BundleManifest), append(data, '\n'), 0o644)
}

// fixtureUUID is a UUID derived from name (sha256, shaped as a version 4
// UUID), so that a fixture's filesystem UUID and hash seed are the same on
// every build.
func fixtureUUID(name string) string {
	u := sha256.Sum256([]byte("docker2vm-testenv\n" + name))
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	x := hex.EncodeToString(u[:16])
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}

// ---------------------------------------------------------------- trees

const (
	kindDir = 0o040000
	kindReg = 0o100000
	kindLnk = 0o120000
	kindChr = 0o020000
)

type entry struct {
	path   string // relative, no leading slash
	mode   uint32 // permission bits (incl. sticky); type is in kind
	kind   uint32
	data   []byte
	src    string // file contents from here when data is nil
	target string // symlink target
	major  uint32
	minor  uint32
}

type tree struct{ entries map[string]*entry }

func newTree() *tree { return &tree{entries: map[string]*entry{}} }

func (t *tree) dir(p string, mode uint32) {
	p = strings.Trim(p, "/")
	if p == "" || p == "." {
		return
	}
	t.dir(filepath.Dir(p), 0o755)
	if _, ok := t.entries[p]; !ok {
		t.entries[p] = &entry{path: p, kind: kindDir, mode: mode}
	}
}

func (t *tree) file(p string, mode uint32, data []byte, src string) {
	t.dir(filepath.Dir(p), 0o755)
	t.entries[p] = &entry{path: p, kind: kindReg, mode: mode, data: data, src: src}
}

func (t *tree) symlink(p, target string) {
	t.dir(filepath.Dir(p), 0o755)
	t.entries[p] = &entry{path: p, kind: kindLnk, mode: 0o777, target: target}
}

func (t *tree) dev(p string, mode uint32, major, minor uint32) {
	t.dir(filepath.Dir(p), 0o755)
	t.entries[p] = &entry{path: p, kind: kindChr, mode: mode, major: major, minor: minor}
}

// base adds busybox at /bin/busybox with all its applets as symlinks and the
// usual top-level directories.
func (t *tree) base(busybox string, applets []string) {
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc", "lib", "proc", "sys", "dev", "run", "tmp"} {
		t.dir(d, 0o755)
	}
	t.file("bin/busybox", 0o755, nil, busybox)
	for _, a := range applets {
		if a == "bin/busybox" {
			continue
		}
		t.symlink(a, "/bin/busybox")
	}
}

// addDir copies a host directory tree (regular files, dirs, symlinks).
func (t *tree) addDir(src, dst string) error {
	return filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.ToSlash(filepath.Join(dst, rel))
		switch {
		case info.IsDir():
			t.dir(target, 0o755)
		case info.Mode()&os.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			t.symlink(target, l)
		case info.Mode().IsRegular():
			t.file(target, uint32(info.Mode().Perm()), nil, p)
		}
		return nil
	})
}

func (t *tree) sorted() []*entry {
	list := make([]*entry, 0, len(t.entries))
	for _, e := range t.entries {
		list = append(list, e)
	}
	// Parents sort before children because a path is a prefix of its
	// children's paths and "/" sorts before every name character we use.
	sort.Slice(list, func(i, j int) bool { return list[i].path < list[j].path })
	return list
}

func (e *entry) contents() ([]byte, error) {
	if e.kind == kindLnk {
		return []byte(e.target), nil
	}
	if e.kind != kindReg {
		return nil, nil
	}
	if e.data != nil || e.src == "" {
		return e.data, nil
	}
	return os.ReadFile(e.src)
}

// writeCpio writes the tree as a "newc" cpio archive owned by root with
// zero mtimes (reproducible).
func (t *tree) writeCpio(w io.Writer) error {
	ino := uint32(1)
	write := func(name string, mode, nlink uint32, data []byte, rmaj, rmin uint32) error {
		hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmaj, rmin, len(name)+1, 0)
		ino++
		buf := append([]byte(hdr), name...)
		buf = append(buf, 0)
		for len(buf)%4 != 0 {
			buf = append(buf, 0)
		}
		buf = append(buf, data...)
		for len(buf)%4 != 0 {
			buf = append(buf, 0)
		}
		_, err := w.Write(buf)
		return err
	}
	for _, e := range t.sorted() {
		data, err := e.contents()
		if err != nil {
			return err
		}
		nlink := uint32(1)
		if e.kind == kindDir {
			nlink = 2
		}
		if err := write(e.path, e.kind|e.mode, nlink, data, e.major, e.minor); err != nil {
			return err
		}
	}
	return write("TRAILER!!!", 0, 1, nil, 0, 0)
}

// materialize writes the tree to a host directory for mke2fs -d. Device
// nodes are skipped (the guest mounts devtmpfs on /dev).
func (t *tree) materialize(dir string) error {
	for _, e := range t.sorted() {
		p := filepath.Join(dir, filepath.FromSlash(e.path))
		switch e.kind {
		case kindDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case kindLnk:
			if err := os.Symlink(e.target, p); err != nil {
				return err
			}
		case kindReg:
			if e.data == nil && e.src != "" {
				if err := copyFile(e.src, p, 0o644); err != nil {
					return err
				}
			} else if err := os.WriteFile(p, e.data, 0o644); err != nil {
				return err
			}
		}
	}
	// Apply modes after the contents (and children) exist; Chmod avoids the
	// umask and keeps sticky bits.
	for _, e := range t.sorted() {
		if e.kind == kindLnk || e.kind == kindChr {
			continue
		}
		fm := os.FileMode(e.mode & 0o777)
		if e.mode&0o1000 != 0 {
			fm |= os.ModeSticky
		}
		if err := os.Chmod(filepath.Join(dir, filepath.FromSlash(e.path)), fm); err != nil {
			return err
		}
	}
	// Fixed timestamps (children before parents) make the image
	// reproducible together with mke2fs -U, hash_seed and E2FSPROGS_FAKE_TIME.
	list := t.sorted()
	for i := len(list) - 1; i >= 0; i-- {
		if err := lutimes(filepath.Join(dir, filepath.FromSlash(list[i].path)), epoch); err != nil {
			return err
		}
	}
	return lutimes(dir, epoch)
}

// epoch is the timestamp of every file in the fixture images (2000-01-01).
const epoch = 946684800

func lutimes(p string, sec int64) error {
	ts := []unix.Timespec{{Sec: sec}, {Sec: sec}}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimensat", Path: p, Err: err}
	}
	return nil
}

// ---------------------------------------------------------------- files

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// isStatic reports whether p is a statically linked ELF executable for
// machine m.
func isStatic(p string, m elf.Machine) bool {
	f, err := elf.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	if f.Machine != m {
		return false
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// requireDebArch skips (fails under CI) unless apt can fetch
// packages of the architecture: the native one, or a foreign one added
// with dpkg --add-architecture (scripts/install-deps.sh does that).
func requireDebArch(t testenv.TB, a *testenv.Arch) {
	t.Helper()
	native, err := exec.Command("dpkg", "--print-architecture").Output()
	if err == nil && strings.TrimSpace(string(native)) == a.Name {
		return
	}
	foreign, _ := exec.Command("dpkg", "--print-foreign-architectures").Output()
	for _, f := range strings.Fields(string(foreign)) {
		if f == a.Name {
			return
		}
	}
	require.Missing(t, "apt has no %s packages (as root: dpkg --add-architecture %s && apt-get update, or run scripts/install-deps.sh)", a.Name, a.Name)
}

// Assets returns a new asset directory (under t.TempDir) that boots
// rootfs (an ext4 image, e.g. a converted container image) with the kernel
// and initramfs of the base bundle baseDir (usually BaseBundle(t)).
// Kernel and initramfs are symlinked, rootfs is symlinked too (Gondolin
// never writes to it in cow/memory/readonly modes), and a manifest.json
// with fresh checksums and buildId is written, for the base's architecture.
// The rootfs must carry its own /init and /usr/bin/sandboxd (see
// Sandboxd).
func Assets(t testenv.TB, baseDir, rootfs string) string {
	t.Helper()
	arch := BundleArch(t, baseDir)
	dir := t.TempDir()
	for _, l := range []struct{ src, name string }{
		{filepath.Join(baseDir, BundleKernel), BundleKernel},
		{filepath.Join(baseDir, BundleInitramfs), BundleInitramfs},
		{rootfs, BundleRootfs},
	} {
		src, err := filepath.Abs(l.src)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(src); err != nil {
			t.Fatalf("gondolintest.Assets: %v", err)
		}
		if err := os.Symlink(src, filepath.Join(dir, l.name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := writeManifest(dir, testenv.ArchOf(t, arch).Gondolin, "docker2vm"); err != nil {
		t.Fatalf("gondolintest.Assets: %v", err)
	}
	return dir
}

// BundleArch returns the architecture ("amd64", "arm64") of a Gondolin
// asset directory, from its manifest.json's config.arch.
func BundleArch(t testenv.TB, dir string) string {
	t.Helper()
	arch, err := manifestArch(dir)
	if err != nil {
		t.Fatalf("gondolintest.BundleArch: %v", err)
	}
	return arch
}

func manifestArch(dir string) (string, error) {
	raw, err := os.ReadFile(filepath.Join(dir, BundleManifest))
	if err != nil {
		return "", err
	}
	var m gondolin.Manifest // not validated: only config.arch is needed
	if err := json.Unmarshal(raw, &m); err != nil {
		return "", fmt.Errorf("%s: %v", filepath.Join(dir, BundleManifest), err)
	}
	a := testenv.LookupArch(m.Config.Arch)
	if a == nil {
		return "", fmt.Errorf("%s: config.arch %q is neither x86_64 nor aarch64", filepath.Join(dir, BundleManifest), m.Config.Arch)
	}
	return a.Name, nil
}
