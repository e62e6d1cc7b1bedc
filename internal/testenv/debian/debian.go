// Package debian builds a realistic multi-layer test image: a Debian
// bookworm minbase made with debootstrap (layer 1), whiteouts, an opaque
// directory and a changed file (layer 2), and a file carrying a
// security.capability xattr (layer 3), for amd64 or arm64 (debootstrap
// --foreign, its second stage run under qemu-user through binfmt_misc).
// The debootstrap tree and the layer tars are cached across test runs in
// testenv.CacheDir()/debian-minbase-bookworm (amd64) and
// debian-minbase-bookworm-arm64.
package debian

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"golang.org/x/sys/unix"

	"github.com/docker2vm/docker2vm/internal/mountinfo"
	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/testenv"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
	"github.com/docker2vm/docker2vm/internal/testenv/qemuuser"
)

// Packages lists the Debian packages Image needs (debootstrap
// pulls in wget; gpgv and debian-archive-keyring let it verify the mirror).
// A foreign architecture also needs qemu-user (see qemuuser.Path).
const Packages = "debootstrap gpgv debian-archive-keyring"

const (
	suite = "bookworm"
	// treeBaseName is the cache directory of the amd64 debootstrap
	// result; other architectures append "-<arch>".
	treeBaseName = "debian-minbase-" + suite
	// treeFormat is recorded in the tree's info.json: bump it when
	// the debootstrap invocation changes (the tree is then rebuilt).
	treeFormat = "docker2vm-testenv-debian-tree-v1"
	// layersVersion keys the cached layer tars: bump it on any change
	// to how the layers are made.
	layersVersion = "docker2vm-testenv-debian-layers-v3"
	// layerEpoch is the mtime of everything layers 2 and 3 add.
	layerEpoch = 1700000000
)

// Env is the image config's Env of Image.
var Env = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"DOCKER2VM_TEST=debian",
}

// Cmd is the image config's Cmd of Image.
var Cmd = []string{"/bin/bash"}

// Facts are what tests can assert about Image's merged tree.
// Paths are absolute ("/usr/bin/su").
type Facts struct {
	// DebianVersion is the content of /etc/debian_version without the
	// trailing newline ("12.12").
	DebianVersion string
	// WhitedOut are present in layer 1 and removed by ".wh." whiteouts in
	// layer 2: a regular file first, then a non-empty directory.
	WhitedOut []string
	// OpaqueDir is made opaque in layer 2: its layer-1 children are hidden
	// and NewInOpaque is its only child.
	OpaqueDir   string
	NewInOpaque string
	// SetuidPath is a regular file with mode 04755 in layer 1.
	SetuidPath string
	// CapPath is added in layer 3 (a copy of /usr/bin/ls, mode 0755) with
	// the xattr security.capability = CapValue (cap_net_raw+ep, the 20-byte
	// vfs_cap_data revision 2).
	CapPath  string
	CapValue []byte
	// Env is the image config's Env (Env).
	Env []string
	// Entries counts the entries of the merged tree, not counting "/".
	Entries int
}

func (f Facts) clone() Facts {
	f.WhitedOut = append([]string(nil), f.WhitedOut...)
	f.CapValue = append([]byte(nil), f.CapValue...)
	f.Env = append([]string(nil), f.Env...)
	return f
}

// CapValue is security.capability for cap_net_raw+ep: struct
// vfs_cap_data (linux/capability.h) with magic_etc = VFS_CAP_REVISION_2 |
// VFS_CAP_FLAGS_EFFECTIVE, then {permitted, inheritable} for the low and
// the high 32 capabilities, all little-endian. CAP_NET_RAW is 13.
func CapValue() []byte {
	const (
		vfsCapRevision2      = 0x02000000
		vfsCapFlagsEffective = 0x000001
		capNetRaw            = 13
	)
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], vfsCapRevision2|vfsCapFlagsEffective)
	binary.LittleEndian.PutUint32(b[4:], 1<<capNetRaw) // data[0].permitted
	binary.LittleEndian.PutUint32(b[8:], 0)            // data[0].inheritable
	binary.LittleEndian.PutUint32(b[12:], 0)           // data[1].permitted
	binary.LittleEndian.PutUint32(b[16:], 0)           // data[1].inheritable
	return b
}

// layerTars is the compression-independent part, memoized per process.
type layerTars struct {
	tars  [3][]byte
	facts Facts
}

type imageKey struct {
	arch string
	c    imagetest.Compression
}

var (
	mu     sync.Mutex
	memo   = map[string]*layerTars{} // by arch
	images = map[imageKey]v1.Image{}
)

// Image is ImageArch(t, testenv.AMD64, c).
func Image(t testenv.TB, c imagetest.Compression) (v1.Image, Facts) {
	t.Helper()
	return ImageArch(t, testenv.AMD64, c)
}

// ImageArch returns a 3-layer linux/<arch> image (OCI media types; c
// selects the layer compression, gzip when empty) of a Debian bookworm
// minbase made with debootstrap, plus facts tests can assert:
//
//   - layer 1: the whole debootstrap tree, walked in lexical order, with
//     numeric owners, full modes (setuid/setgid/sticky), mtimes (seconds),
//     symlinks, hardlinks, device nodes, FIFOs and xattrs (PAX
//     SCHILY.xattr.*);
//   - layer 2: a file whiteout and a directory whiteout (WhitedOut), the
//     opaque OpaqueDir with its one new child NewInOpaque, and a changed
//     /etc/motd;
//   - layer 3: CapPath with security.capability = CapValue.
//
// The config has Env Env and Cmd Cmd. The image is
// deterministic for a given cached tree. Needs root and debootstrap (see
// Packages) and the Debian mirror the first time (~40 s for amd64;
// ~90 s for arm64, whose package scripts run under qemu-user, which also
// needs binfmt_misc: it is mounted and qemu-aarch64 registered when they
// are not); it skips the test when either is missing, except under
// CI, where it fails. It also skips in -short mode. The tree and the
// layers (compressed too) are cached in testenv.CacheDir(), so a warm call
// costs reading ~300 MB.
func ImageArch(t testenv.TB, arch string, c imagetest.Compression) (v1.Image, Facts) {
	t.Helper()
	a := testenv.ArchOf(t, arch)
	if c == "" {
		c = imagetest.Gzip
	}
	require.Integration(t, "debootstraps Debian, ~200 MB of layers")
	require.Root(t, "for debootstrap")
	bin := require.Tool(t, "debootstrap")
	if !a.Native() {
		qemuuser.Path(t, a.Name)
	}

	mu.Lock()
	defer mu.Unlock()
	key := imageKey{a.Name, c}
	if img, ok := images[key]; ok {
		return img, memo[a.Name].facts.clone()
	}
	start := time.Now()
	b := &builder{t: t, debootstrap: bin, cache: testenv.CacheDir(), arch: a}
	img, err := b.image(c)
	if err != nil {
		t.Fatalf("debian.ImageArch(%s): %v", a.Name, err)
	}
	images[key] = img
	t.Logf("debian.ImageArch(%s, %s): ready in %s", a.Name, c, time.Since(start).Round(time.Millisecond))
	return img, memo[a.Name].facts.clone()
}

type builder struct {
	t           testenv.TB
	debootstrap string
	cache       string
	arch        *testenv.Arch
}

func (b *builder) image(c imagetest.Compression) (v1.Image, error) {
	unlock, err := testenv.Lock(filepath.Join(b.cache, ".debian.lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()

	if memo[b.arch.Name] == nil {
		tree, info, err := b.tree()
		if err != nil {
			return nil, err
		}
		m, err := b.layers(tree, info)
		if err != nil {
			return nil, err
		}
		memo[b.arch.Name] = m
	}
	ldir, err := b.layersDir()
	if err != nil {
		return nil, err
	}
	var layers []v1.Layer
	for i, tb := range memo[b.arch.Name].tars {
		l, err := b.compressed(ldir, i+1, tb, c)
		if err != nil {
			return nil, err
		}
		layers = append(layers, l)
	}
	img := imagetest.New(b.t, imagetest.Spec{OCI: true, Layers: layers, Env: append([]string(nil), Env...),
		Platform: v1.Platform{OS: "linux", Architecture: b.arch.Name}})
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg := *cf.Config.DeepCopy()
	cfg.Cmd = append([]string(nil), Cmd...)
	return mutate.Config(img, cfg)
}

// ---------------------------------------------------------------- tree

// treeInfo is info.json beside the tree: it identifies one
// debootstrap run (the layer cache key hashes it).
type treeInfo struct {
	Format string `json:"format"`
	// Arch is the Debian architecture; trees from before it was recorded
	// are amd64.
	Arch        string `json:"arch,omitempty"`
	Suite       string `json:"suite"`
	Variant     string `json:"variant"`
	Mirror      string `json:"mirror"`
	Debootstrap string `json:"debootstrap"`
	Built       string `json:"built"`
}

func (b *builder) treeName() string {
	if b.arch.Name == testenv.AMD64 {
		return treeBaseName
	}
	return treeBaseName + "-" + b.arch.Name
}

func (b *builder) treeDir() string { return filepath.Join(b.cache, b.treeName()) }

// tree returns the cached debootstrap root (testenv.CacheDir()/
// debian-minbase-bookworm[-<arch>]/rootfs), building it when missing. The
// caller holds the flock.
func (b *builder) tree() (string, []byte, error) {
	dir := b.treeDir()
	infoPath := filepath.Join(dir, "info.json")
	if raw, err := os.ReadFile(infoPath); err == nil {
		var info treeInfo
		if info.Arch == "" {
			info.Arch = testenv.AMD64
		}
		if json.Unmarshal(raw, &info) == nil && info.Format == treeFormat && info.Arch == b.arch.Name {
			return filepath.Join(dir, "rootfs"), raw, nil
		}
		b.t.Logf("debian.Image: %s is stale (format %q, arch %q), rebuilding", dir, info.Format, info.Arch)
	}
	// Leftovers of an interrupted build, or a stale tree.
	stale, _ := filepath.Glob(dir + ".tmp-*")
	if _, err := os.Lstat(dir); err == nil {
		stale = append(stale, dir)
	}
	for _, s := range stale {
		if err := removeAll(s); err != nil {
			return "", nil, err
		}
	}

	mirror := testenv.DebianMirror()
	tmp, err := os.MkdirTemp(b.cache, b.treeName()+".tmp-")
	if err != nil {
		return "", nil, err
	}
	defer removeAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", nil, err
	}
	rootfs := filepath.Join(tmp, "rootfs")
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	env := append(os.Environ(), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	var out bytes.Buffer
	run := func(name string, args ...string) error {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = env
		cmd.Stdout = &out
		cmd.Stderr = &out
		return cmd.Run()
	}
	var runErr error
	if b.arch.Native() {
		b.t.Logf("debian.Image: debootstrap --variant=minbase %s %s %s (cold cache, ~40 s)", suite, rootfs, mirror)
		runErr = run(b.debootstrap, "--variant=minbase", suite, rootfs, mirror)
	} else {
		// The first stage unpacks the packages; the second configures them
		// by running the target's binaries in a chroot, through qemu-user.
		b.t.Logf("debian.Image: debootstrap --arch=%s --foreign --variant=minbase %s %s %s, then its second stage under qemu-user (cold cache, ~90 s)",
			b.arch.Name, suite, rootfs, mirror)
		if runErr = qemuuser.RegisterBinfmt(b.t, b.arch); runErr == nil {
			runErr = run(b.debootstrap, "--arch="+b.arch.Name, "--foreign", "--variant=minbase", suite, rootfs, mirror)
		}
		if runErr == nil {
			runErr = run("chroot", rootfs, "/debootstrap/debootstrap", "--second-stage")
		}
	}
	_ = os.WriteFile(filepath.Join(tmp, "debootstrap.log"), out.Bytes(), 0o644)
	// debootstrap unmounts what it mounted in the target, but not when it
	// fails half-way: never walk or keep a tree with mounts inside.
	if err := unmountUnder(tmp); err != nil {
		return "", nil, err
	}
	if runErr != nil {
		return "", nil, fmt.Errorf("debootstrap: %v\n%s", runErr, testenv.Tail(out.String(), 4000))
	}
	b.t.Logf("debian.Image: debootstrap took %s", time.Since(start).Round(time.Millisecond))

	ver, _ := exec.Command("dpkg-query", "-W", "-f=${Version}", "debootstrap").Output()
	info, err := json.MarshalIndent(treeInfo{
		Format: treeFormat, Arch: b.arch.Name, Suite: suite, Variant: "minbase", Mirror: mirror,
		Debootstrap: strings.TrimSpace(string(ver)), Built: time.Now().UTC().Format(time.RFC3339Nano),
	}, "", "  ")
	if err != nil {
		return "", nil, err
	}
	if err := os.WriteFile(filepath.Join(tmp, "info.json"), append(info, '\n'), 0o644); err != nil {
		return "", nil, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", nil, err
	}
	return filepath.Join(dir, "rootfs"), append(info, '\n'), nil
}

// ---------------------------------------------------------------- layers

func (b *builder) layersKey(info []byte) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s", layersVersion, info)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func (b *builder) layersDir() (string, error) {
	info, err := os.ReadFile(filepath.Join(b.treeDir(), "info.json"))
	if err != nil {
		return "", err
	}
	return filepath.Join(b.treeDir(), "layers", b.layersKey(info)), nil
}

// layers returns the three uncompressed layer tars and the facts, from
// the cache or built from the tree. The caller holds the flock.
func (b *builder) layers(rootfs string, info []byte) (*layerTars, error) {
	parent := filepath.Join(b.treeDir(), "layers")
	key := b.layersKey(info)
	dir := filepath.Join(parent, key)
	if m, err := loadLayers(dir); err == nil {
		return m, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		b.t.Logf("debian.Image: cached layers in %s unusable (%v), rebuilding", dir, err)
	}
	// Drop layer sets of other builder versions and leftovers.
	if old, err := os.ReadDir(parent); err == nil {
		for _, e := range old {
			if e.Name() != key {
				if err := os.RemoveAll(filepath.Join(parent, e.Name())); err != nil {
					return nil, err
				}
			}
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}

	start := time.Now()
	m, err := buildLayers(rootfs)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(parent, "tmp-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	for i, tb := range m.tars {
		if err := os.WriteFile(filepath.Join(tmp, fmt.Sprintf("layer%d.tar", i+1)), tb, 0o644); err != nil {
			return nil, err
		}
	}
	fj, err := json.MarshalIndent(m.facts, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(tmp, "facts.json"), fj, 0o644); err != nil {
		return nil, err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return nil, err
	}
	b.t.Logf("debian.Image: built layer tars (%d + %d + %d bytes, %d merged entries) in %s",
		len(m.tars[0]), len(m.tars[1]), len(m.tars[2]), m.facts.Entries, time.Since(start).Round(time.Millisecond))
	return m, nil
}

func loadLayers(dir string) (*layerTars, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "facts.json"))
	if err != nil {
		return nil, err
	}
	m := &layerTars{}
	if err := json.Unmarshal(raw, &m.facts); err != nil {
		return nil, err
	}
	for i := range m.tars {
		if m.tars[i], err = os.ReadFile(filepath.Join(dir, fmt.Sprintf("layer%d.tar", i+1))); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// compressed returns layer n (1-based) compressed with c, reading the
// compressed bytes from the cache or compressing with imagetest.NewLayer
// and caching the result.
func (b *builder) compressed(dir string, n int, tarBytes []byte, c imagetest.Compression) (*imagetest.Layer, error) {
	if c != imagetest.Gzip && c != imagetest.Zstd {
		return imagetest.NewLayer(b.t, tarBytes, c, true), nil
	}
	ext := map[imagetest.Compression]string{imagetest.Gzip: "gz", imagetest.Zstd: "zst"}[c]
	p := filepath.Join(dir, fmt.Sprintf("layer%d.tar.%s", n, ext))
	if raw, err := os.ReadFile(p); err == nil {
		// The media type comes from imagetest.NewLayer, so it stays in step with it.
		mt := imagetest.NewLayer(b.t, nil, c, true).MT
		return &imagetest.Layer{Raw: raw, Tar: tarBytes, MT: mt}, nil
	}
	start := time.Now()
	l := imagetest.NewLayer(b.t, tarBytes, c, true)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, ".tmp-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(l.Raw); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	if err := os.Rename(f.Name(), p); err != nil {
		return nil, err
	}
	b.t.Logf("debian.Image: compressed layer %d with %s (%d -> %d bytes) in %s", n, c, len(tarBytes), len(l.Raw), time.Since(start).Round(time.Millisecond))
	return l, nil
}

// buildLayers walks rootfs into layer 1 and makes layers 2 and 3.
func buildLayers(rootfs string) (*layerTars, error) {
	m := &layerTars{}
	facts := &m.facts
	facts.Env = append([]string(nil), Env...)

	// Layer 1: the whole tree.
	var l1 bytes.Buffer
	tw := tar.NewWriter(&l1)
	var rootStat unix.Stat_t
	if err := unix.Lstat(rootfs, &rootStat); err != nil {
		return nil, &os.PathError{Op: "lstat", Path: rootfs, Err: err}
	}
	type devIno struct{ dev, ino uint64 }
	links := map[devIno]string{}
	var names []string
	var setuid []string
	err := filepath.WalkDir(rootfs, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == rootfs {
			return nil
		}
		rel, err := filepath.Rel(rootfs, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return &os.PathError{Op: "lstat", Path: p, Err: err}
		}
		h, err := header(p, name, &st)
		if err != nil || h == nil {
			return err
		}
		if h.Typeflag == tar.TypeReg && st.Nlink > 1 {
			k := devIno{uint64(st.Dev), st.Ino}
			if first, ok := links[k]; ok {
				h.Typeflag, h.Linkname, h.Size = tar.TypeLink, first, 0
			} else {
				links[k] = name
			}
		}
		if h.Typeflag == tar.TypeReg && h.Mode&0o4000 != 0 {
			setuid = append(setuid, "/"+name)
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		names = append(names, name)
		if h.Typeflag == tar.TypeReg {
			if err := copyFile(tw, p, h.Size); err != nil {
				return err
			}
		}
		// Never descend into another file system (a mount debootstrap left).
		if h.Typeflag == tar.TypeDir && uint64(st.Dev) != uint64(rootStat.Dev) {
			return fs.SkipDir
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	m.tars[0] = l1.Bytes()

	ver, err := os.ReadFile(filepath.Join(rootfs, "etc/debian_version"))
	if err != nil {
		return nil, err
	}
	facts.DebianVersion = strings.TrimSpace(string(ver))
	for _, want := range []string{"/usr/bin/su", "/usr/bin/passwd", "/usr/bin/mount"} {
		for _, s := range setuid {
			if s == want && facts.SetuidPath == "" {
				facts.SetuidPath = s
			}
		}
	}
	if facts.SetuidPath == "" && len(setuid) > 0 {
		facts.SetuidPath = setuid[0]
	}
	if facts.SetuidPath == "" {
		return nil, errors.New("no setuid file in the debootstrap tree")
	}

	// Layer 2: whiteouts, an opaque directory, a changed file.
	fileWh := firstExisting(rootfs, false, "etc/issue.net", "etc/issue", "etc/host.conf")
	dirWh := firstExisting(rootfs, true, "usr/share/man", "var/cache/debconf", "usr/share/info", "usr/share/lintian")
	opaque := "usr/share/doc"
	if fileWh == "" || dirWh == "" || !isNonEmptyDir(filepath.Join(rootfs, opaque)) {
		return nil, fmt.Errorf("debootstrap tree lacks the paths layer 2 changes (%q, %q, %q)", fileWh, dirWh, opaque)
	}
	motd := "etc/motd"
	var motdStat unix.Stat_t
	if err := unix.Lstat(filepath.Join(rootfs, motd), &motdStat); err != nil {
		return nil, &os.PathError{Op: "lstat", Path: motd, Err: err}
	}
	newInOpaque := opaque + "/README.docker2vm"
	facts.WhitedOut = []string{"/" + fileWh, "/" + dirWh}
	facts.OpaqueDir, facts.NewInOpaque = "/"+opaque, "/"+newInOpaque

	epoch := time.Unix(layerEpoch, 0)
	l2 := &layerWriter{rootfs: rootfs, mtime: epoch, dirs: map[string]bool{}}
	l2.whiteout(fileWh)
	l2.whiteout(dirWh)
	l2.parents(opaque + "/")
	l2.add(&tar.Header{Name: opaque + "/.wh..wh..opq", Typeflag: tar.TypeReg}, nil)
	l2.add(&tar.Header{Name: newInOpaque, Typeflag: tar.TypeReg, Mode: 0o644},
		[]byte("Added by docker2vm's test image in layer 2: /usr/share/doc is opaque here,\nso this is its only entry.\n"))
	l2.parents(motd)
	l2.add(&tar.Header{Name: motd, Typeflag: tar.TypeReg, Mode: int64(motdStat.Mode & 0o7777), Uid: int(motdStat.Uid), Gid: int(motdStat.Gid)},
		[]byte("docker2vm test image: /etc/motd as changed by layer 2.\n"))
	if m.tars[1], err = l2.close(); err != nil {
		return nil, err
	}

	// Layer 3: a copy of ls with cap_net_raw+ep.
	ls, err := os.ReadFile(filepath.Join(rootfs, "usr/bin/ls"))
	if err != nil {
		return nil, err
	}
	capPath := "usr/local/bin/capls"
	facts.CapPath, facts.CapValue = "/"+capPath, CapValue()
	l3 := &layerWriter{rootfs: rootfs, mtime: epoch, dirs: map[string]bool{}}
	l3.parents(capPath)
	l3.add(&tar.Header{Name: capPath, Typeflag: tar.TypeReg, Mode: 0o755,
		PAXRecords: map[string]string{"SCHILY.xattr.security.capability": string(facts.CapValue)}}, ls)
	if m.tars[2], err = l3.close(); err != nil {
		return nil, err
	}

	// The merged tree's entries.
	merged := make(map[string]bool, len(names))
	for _, n := range names {
		merged[n] = true
	}
	for n := range merged {
		if n == fileWh || n == dirWh || strings.HasPrefix(n, dirWh+"/") || strings.HasPrefix(n, opaque+"/") {
			delete(merged, n)
		}
	}
	merged[newInOpaque] = true
	merged[capPath] = true
	for d := path.Dir(capPath); d != "."; d = path.Dir(d) {
		merged[d] = true
	}
	facts.Entries = len(merged)
	return m, nil
}

// header makes the PAX header of one tree entry (nil for sockets,
// which tar cannot hold).
func header(p, name string, st *unix.Stat_t) (*tar.Header, error) {
	h := &tar.Header{
		Name:    name,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: time.Unix(int64(st.Mtim.Sec), 0),
		Format:  tar.FormatPAX,
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		h.Typeflag = tar.TypeDir
		h.Name += "/"
	case unix.S_IFREG:
		h.Typeflag = tar.TypeReg
		h.Size = st.Size
	case unix.S_IFLNK:
		h.Typeflag = tar.TypeSymlink
		target, err := os.Readlink(p)
		if err != nil {
			return nil, err
		}
		h.Linkname = target
	case unix.S_IFCHR, unix.S_IFBLK:
		h.Typeflag = tar.TypeChar
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			h.Typeflag = tar.TypeBlock
		}
		h.Devmajor = int64(unix.Major(uint64(st.Rdev)))
		h.Devminor = int64(unix.Minor(uint64(st.Rdev)))
	case unix.S_IFIFO:
		h.Typeflag = tar.TypeFifo
	default:
		return nil, nil
	}
	xattrs, err := readXattrs(p)
	if err != nil {
		return nil, err
	}
	for k, v := range xattrs {
		if h.PAXRecords == nil {
			h.PAXRecords = map[string]string{}
		}
		h.PAXRecords["SCHILY.xattr."+k] = v
	}
	return h, nil
}

// readXattrs reads p's extended attributes without following symlinks.
func readXattrs(p string) (map[string]string, error) {
	var buf []byte
	for {
		sz, err := unix.Llistxattr(p, nil)
		if err == unix.ENOTSUP || err == unix.EOPNOTSUPP {
			return nil, nil
		}
		if err != nil {
			return nil, &os.PathError{Op: "llistxattr", Path: p, Err: err}
		}
		if sz == 0 {
			return nil, nil
		}
		buf = make([]byte, sz)
		sz, err = unix.Llistxattr(p, buf)
		if err == unix.ERANGE {
			continue // grew in between
		}
		if err != nil {
			return nil, &os.PathError{Op: "llistxattr", Path: p, Err: err}
		}
		buf = buf[:sz]
		break
	}
	out := map[string]string{}
	for _, k := range strings.Split(strings.TrimRight(string(buf), "\x00"), "\x00") {
		if k == "" {
			continue
		}
		sz, err := unix.Lgetxattr(p, k, nil)
		if err == unix.ENODATA {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "lgetxattr " + k, Path: p, Err: err}
		}
		v := make([]byte, sz)
		sz, err = unix.Lgetxattr(p, k, v)
		if err != nil {
			return nil, &os.PathError{Op: "lgetxattr " + k, Path: p, Err: err}
		}
		out[k] = string(v[:sz])
	}
	return out, nil
}

func copyFile(w io.Writer, p string, size int64) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(w, bufio.NewReaderSize(f, 1<<16))
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if n != size {
		return fmt.Errorf("%s: size changed while reading (%d, stat said %d)", p, n, size)
	}
	return nil
}

func firstExisting(rootfs string, dir bool, rels ...string) string {
	for _, r := range rels {
		st, err := os.Lstat(filepath.Join(rootfs, r))
		if err != nil {
			continue
		}
		if dir && isNonEmptyDir(filepath.Join(rootfs, r)) {
			return r
		}
		if !dir && st.Mode().IsRegular() {
			return r
		}
	}
	return ""
}

func isNonEmptyDir(p string) bool {
	es, err := os.ReadDir(p)
	return err == nil && len(es) > 0
}

// layerWriter writes a small upper layer: each entry is preceded by
// its parent directories (owner and mode from the tree, with the layer's
// mtime, as a real diff of a changed directory has), and close writes the
// entries sorted as filepath.WalkDir visits a tree.
type layerWriter struct {
	rootfs  string
	mtime   time.Time
	dirs    map[string]bool
	entries []entry
	err     error
}

type entry struct {
	h    *tar.Header
	data []byte
}

// walkLess orders paths as a lexical depth-first walk does: by
// component, so "a/b" comes before "a-c".
func walkLess(a, b string) int {
	return slices.Compare(strings.Split(strings.TrimSuffix(a, "/"), "/"), strings.Split(strings.TrimSuffix(b, "/"), "/"))
}

// parents writes the directories above name (name itself too when it ends
// in "/").
func (w *layerWriter) parents(name string) {
	target := strings.TrimSuffix(name, "/")
	var chain []string
	if strings.HasSuffix(name, "/") {
		chain = append(chain, target)
	}
	for d := path.Dir(target); d != "." && d != "/"; d = path.Dir(d) {
		chain = append(chain, d)
	}
	for i := len(chain) - 1; i >= 0; i-- {
		d := chain[i]
		if w.dirs[d] {
			continue
		}
		w.dirs[d] = true
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(w.rootfs, d), &st); err != nil {
			w.fail(&os.PathError{Op: "lstat", Path: d, Err: err})
			return
		}
		w.add(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: int64(st.Mode & 0o7777), Uid: int(st.Uid), Gid: int(st.Gid)}, nil)
	}
}

// whiteout writes rel's parents and rel's ".wh." entry (an empty regular
// file with mode 0, as Docker writes it).
func (w *layerWriter) whiteout(rel string) {
	w.parents(rel)
	w.add(&tar.Header{Name: path.Join(path.Dir(rel), ".wh."+path.Base(rel)), Typeflag: tar.TypeReg}, nil)
}

func (w *layerWriter) add(h *tar.Header, data []byte) {
	h.Format = tar.FormatPAX
	h.ModTime = w.mtime
	h.Size = int64(len(data))
	w.entries = append(w.entries, entry{h, data})
}

func (w *layerWriter) fail(err error) {
	if w.err == nil {
		w.err = err
	}
}

func (w *layerWriter) close() ([]byte, error) {
	if w.err != nil {
		return nil, w.err
	}
	slices.SortStableFunc(w.entries, func(a, b entry) int { return walkLess(a.h.Name, b.h.Name) })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range w.entries {
		if err := tw.WriteHeader(e.h); err != nil {
			return nil, fmt.Errorf("%s: %w", e.h.Name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ---------------------------------------------------------------- helpers

// removeAll removes dir after detaching anything mounted below it
// (an interrupted debootstrap leaves proc and sys mounted in the target).
func removeAll(dir string) error {
	if err := unmountUnder(dir); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

// unmountUnder lazily unmounts every mount point below dir, deepest
// first, and fails when one stays.
func unmountUnder(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	points, err := mountsUnder(abs)
	if err != nil || len(points) == 0 {
		return err
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	for _, p := range points {
		if err := testenv.UnmountDetach(p); err != nil && err != syscall.EINVAL && err != syscall.ENOENT {
			return fmt.Errorf("unmounting %s: %w", p, err)
		}
	}
	if left, err := mountsUnder(abs); err != nil || len(left) > 0 {
		return fmt.Errorf("mounts remain under %s: %v %v", abs, left, err)
	}
	return nil
}

func mountsUnder(abs string) ([]string, error) {
	mounts, err := mountinfo.Read()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range mountinfo.Under(mounts, abs) {
		if p != abs {
			out = append(out, p)
		}
	}
	return out, nil
}
