package gondolintest

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	_ "embed"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/docker2vm/docker2vm/internal/testenv"
)

// The fixture base's rootfs busybox is built against musl and linked
// dynamically (/lib/ld-musl-ARCH.so.1), as Alpine's busybox in Gondolin's
// alpine-base is, so that converting an image with it follows the base's
// libraries the way converting with alpine-base does. It is built from
// Debian's busybox source with Debian's musl (musl-dev of the target
// architecture, through a specs file as musl-gcc uses) and the GNU C
// compiler for the target; the initramfs keeps a static busybox.

// muslBusyboxConfig lists the busybox options turned on.
//
//go:embed testdata/busybox-musl.config
var muslBusyboxConfig string

// The busybox source: Debian bookworm's, from the Debian mirror.
const (
	busyboxSourceFile   = "pool/main/b/busybox/busybox_1.35.0.orig.tar.bz2"
	busyboxSourceSHA256 = "faeeb244c35a348a334f4a59e44626ee870fb07b6884d68c10ae8bc19f83a694"
)

// MuslBusyboxPackages are the Debian packages the musl busybox build needs
// on an x86_64 host (the arm64 compiler included).
const MuslBusyboxPackages = "make gcc bzip2 gcc-aarch64-linux-gnu"

// gnuTriplet names the architecture for the GNU toolchain.
func gnuTriplet(a *testenv.Arch) string { return a.Gondolin + "-linux-gnu" }

// muslBusybox returns a busybox for the target built against musl and the
// musl dynamic loader it needs (the file /lib/ld-musl-ARCH.so.1 is in the
// guest), building them once per set of inputs into the cache.
func (b *builder) muslBusybox() (bin, loader string, err error) {
	var debs []string
	for _, pkg := range []string{"musl", "musl-dev", "linux-libc-dev"} {
		deb, err := b.aptDownload(pkg, func() (string, error) { return pkg, nil })
		if err != nil {
			return "", "", err
		}
		debs = append(debs, deb)
	}
	cc := "gcc"
	if !b.arch.Native() {
		cc = gnuTriplet(b.arch) + "-gcc"
	}
	ccVersion, err := b.run("", nil, cc, "-dumpfullversion")
	if err != nil {
		return "", "", fmt.Errorf("the C compiler for %s: %w", b.arch.Name, err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "busybox-musl-v2\n%s\n%s\n%s %s\n", busyboxSourceSHA256, muslBusyboxConfig, cc, bytes.TrimSpace(ccVersion))
	for _, d := range debs {
		sum, err := fileSHA256(d)
		if err != nil {
			return "", "", err
		}
		fmt.Fprintf(h, "%s %s\n", filepath.Base(d), sum)
	}
	dir := filepath.Join(b.cache, "busybox-musl", b.arch.Name+"-"+hex.EncodeToString(h.Sum(nil))[:20])
	bin, loader = filepath.Join(dir, "busybox"), filepath.Join(dir, "ld-musl-"+b.arch.Gondolin+".so.1")
	if _, err := os.Stat(loader); err == nil {
		return bin, loader, nil
	}
	src, err := b.busyboxSource()
	if err != nil {
		return "", "", err
	}
	b.logf("building busybox against musl for %s", b.arch.Name)
	tmp, err := os.MkdirTemp(b.cache, "busybox-musl-tmp-")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(tmp)
	root := filepath.Join(tmp, "root")
	for _, d := range debs {
		if _, err := b.run("", nil, "dpkg-deb", "-x", d, root); err != nil {
			return "", "", err
		}
	}
	muslTriplet := b.arch.Gondolin + "-linux-musl"
	// The kernel's headers, which musl's do not include, after musl's.
	kinc := filepath.Join(tmp, "kinc")
	for name, target := range map[string]string{
		"linux":       filepath.Join(root, "usr", "include", "linux"),
		"asm-generic": filepath.Join(root, "usr", "include", "asm-generic"),
		"asm":         filepath.Join(root, "usr", "include", gnuTriplet(b.arch), "asm"),
	} {
		if err := os.MkdirAll(kinc, 0o755); err != nil {
			return "", "", err
		}
		if err := os.Symlink(target, filepath.Join(kinc, name)); err != nil {
			return "", "", err
		}
	}
	specs, err := os.ReadFile(filepath.Join(root, "usr", "lib", muslTriplet, "musl-gcc.specs"))
	if err != nil {
		return "", "", fmt.Errorf("musl-dev for %s: %w", b.arch.Name, err)
	}
	// Point the specs at the unpacked packages; the loader's path in the
	// program stays the guest's.
	libDirs := "-L" + filepath.Join(root, "usr", "lib", muslTriplet) + " -L" + filepath.Join(root, "lib", muslTriplet)
	specsText := strings.NewReplacer(
		"-L/usr/lib/"+muslTriplet, libDirs,
		"/usr/include/"+muslTriplet, filepath.Join(root, "usr", "include", muslTriplet),
		"/usr/lib/"+muslTriplet+"/", filepath.Join(root, "usr", "lib", muslTriplet)+"/",
	).Replace(string(specs))
	specsPath := filepath.Join(tmp, "musl-gcc.specs")
	if err := os.WriteFile(specsPath, []byte(specsText), 0o644); err != nil {
		return "", "", err
	}
	if _, err := b.run(tmp, nil, "tar", "-xjf", src); err != nil {
		return "", "", err
	}
	build := filepath.Join(tmp, "busybox-1.35.0")
	if _, err := b.run(build, nil, "make", "allnoconfig"); err != nil {
		return "", "", err
	}
	// Options that depend on others appear once those are on: turn on
	// what is there, let oldconfig add the rest, again.
	cfgPath := filepath.Join(build, ".config")
	for pass := 0; pass < 3; pass++ {
		cfg, err := os.ReadFile(cfgPath)
		if err != nil {
			return "", "", err
		}
		text := string(cfg)
		for _, line := range strings.Split(muslBusyboxConfig, "\n") {
			if opt := strings.TrimSpace(line); opt != "" && !strings.HasPrefix(opt, "#") {
				text = strings.Replace(text, "# "+opt+" is not set\n", opt+"=y\n", 1)
			}
		}
		// allnoconfig wrote empty values for the options of what was off
		// (the modules directory, ...): let oldconfig take their defaults.
		var kept []string
		for _, line := range strings.Split(text, "\n") {
			if !strings.HasSuffix(line, `=""`) && !strings.HasSuffix(line, "=0") {
				kept = append(kept, line)
			}
		}
		text = strings.Join(kept, "\n")
		if err := os.WriteFile(cfgPath, []byte(text), 0o644); err != nil {
			return "", "", err
		}
		if _, err := b.run(build, nil, "sh", "-c", `yes "" | make oldconfig >/dev/null`); err != nil {
			return "", "", err
		}
	}
	makeArgs := []string{fmt.Sprintf("-j%d", runtime.NumCPU()), "CC=" + cc + " -specs " + specsPath, "EXTRA_CFLAGS=-idirafter " + kinc}
	if !b.arch.Native() {
		makeArgs = append(makeArgs, "CROSS_COMPILE="+gnuTriplet(b.arch)+"-") // its ar, strip...
	}
	if _, err := b.run(build, nil, "make", append(makeArgs, "busybox")...); err != nil {
		return "", "", err
	}
	f, err := elf.Open(filepath.Join(build, "busybox"))
	if err != nil {
		return "", "", err
	}
	interp := ""
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			data, _ := io.ReadAll(p.Open())
			interp = string(bytes.TrimRight(data, "\x00"))
		}
	}
	f.Close()
	if f.Machine != b.arch.Machine || interp != "/lib/ld-musl-"+b.arch.Gondolin+".so.1" {
		return "", "", fmt.Errorf("the musl busybox is for %v with loader %q", f.Machine, interp)
	}
	stage := filepath.Join(tmp, "out")
	if err := os.Mkdir(stage, 0o755); err != nil {
		return "", "", err
	}
	if err := copyFile(filepath.Join(build, "busybox"), filepath.Join(stage, "busybox"), 0o755); err != nil {
		return "", "", err
	}
	// Debian's musl installs the loader as a symlink to its libc.so.
	libc := filepath.Join(root, "lib", muslTriplet, "libc.so")
	if _, err := os.Stat(libc); err != nil {
		libc = filepath.Join(root, "usr", "lib", muslTriplet, "libc.so")
	}
	if err := copyFile(libc, filepath.Join(stage, filepath.Base(loader)), 0o755); err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", "", err
	}
	_ = os.RemoveAll(dir)
	if err := os.Rename(stage, dir); err != nil {
		return "", "", err
	}
	return bin, loader, nil
}

// busyboxSource downloads the busybox source from the Debian mirror into
// the cache, checked against its known sha256.
func (b *builder) busyboxSource() (string, error) {
	p := filepath.Join(b.cache, "debs", filepath.Base(busyboxSourceFile))
	if sum, err := fileSHA256(p); err == nil && sum == busyboxSourceSHA256 {
		return p, nil
	}
	url := testenv.DebianMirror() + "/" + busyboxSourceFile
	resp, err := http.Get(url)
	if err != nil {
		return "", fmt.Errorf("downloading the busybox source: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("downloading %s: %s", url, resp.Status)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", err
	}
	tmp := p + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, h), resp.Body); err != nil {
		f.Close()
		return "", fmt.Errorf("downloading %s: %w", url, err)
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != busyboxSourceSHA256 {
		os.Remove(tmp)
		return "", fmt.Errorf("%s: sha256 %s, want %s", url, got, busyboxSourceSHA256)
	}
	return p, os.Rename(tmp, p)
}
