package gondolin

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/internal/diskio"
)

// BaseOptions say where to look for a Gondolin base bundle.
type BaseOptions struct {
	// Dir is an explicit base directory (the --base flag). When set, it is
	// the only place looked at.
	Dir string
	// Dirs are more explicit base directories (--base given once per
	// architecture, for a multi-platform run): with Dir, the one for the
	// target arch is used, and these are the only places looked at.
	Dirs []string
	// Platform is the target ("linux/amd64", "linux/arm64", "amd64",
	// "x86_64", ...). Required: the base must match the target, not the host.
	Platform string
	// Getenv reads the environment; nil means os.Getenv.
	Getenv func(string) string
	// HTTPClient downloads the registry and the archive; nil means a
	// client with no timeout of its own (the context bounds it).
	HTTPClient *http.Client
	// NoDownload forbids fetching a base from Gondolin's image registry.
	NoDownload bool
	// ResolveOnly, for a dry run, stops short of a download: FindBase
	// looks the build up in the registry and returns a Base with Remote
	// set and no files.
	ResolveOnly bool
	// Progress receives one line per download step (stderr); may be nil.
	Progress io.Writer
	// MaxDownload bounds the archive and each extracted file (0: 8 GiB).
	MaxDownload int64
}

// explicitDirs are Dir and Dirs, without duplicates.
func (o BaseOptions) explicitDirs() []string {
	var out []string
	for _, d := range append([]string{o.Dir}, o.Dirs...) {
		if d != "" && !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

func (o BaseOptions) getenv(k string) string {
	if o.Getenv != nil {
		return o.Getenv(k)
	}
	return os.Getenv(k)
}

func (o BaseOptions) homeDir() string {
	if h := o.getenv("HOME"); h != "" {
		return h
	}
	if o.Getenv == nil {
		if h, err := os.UserHomeDir(); err == nil {
			return h
		}
	}
	return ""
}

// cacheDir is ${XDG_CACHE_HOME:-~/.cache}.
func (o BaseOptions) cacheDir() string {
	if x := o.getenv("XDG_CACHE_HOME"); x != "" {
		return x
	}
	if h := o.homeDir(); h != "" {
		return filepath.Join(h, ".cache")
	}
	return ""
}

// StoreDir is Gondolin's image store for these options:
// ${GONDOLIN_IMAGE_STORE:-${XDG_CACHE_HOME:-~/.cache}/gondolin/images}.
func (o BaseOptions) StoreDir() string {
	if s := o.getenv("GONDOLIN_IMAGE_STORE"); s != "" {
		return s
	}
	if c := o.cacheDir(); c != "" {
		return filepath.Join(c, "gondolin", "images")
	}
	return ""
}

// DefaultImage is the image ref Gondolin boots by default.
func (o BaseOptions) DefaultImage() string {
	if s := strings.TrimSpace(o.getenv("GONDOLIN_DEFAULT_IMAGE")); s != "" {
		return s
	}
	return "alpine-base:latest"
}

// RegistryURL is Gondolin's builtin image registry.
func (o BaseOptions) RegistryURL() string {
	if s := strings.TrimSpace(o.getenv("GONDOLIN_IMAGE_REGISTRY_URL")); s != "" {
		return s
	}
	return DefaultRegistryURL
}

// DefaultRegistryURL is where Gondolin 0.12 fetches its image registry.
const DefaultRegistryURL = "https://raw.githubusercontent.com/earendil-works/gondolin/main/builtin-image-registry.json"

// Base is a Gondolin guest asset directory we reuse the kernel, initramfs
// and runtime glue (from its rootfs) of.
type Base struct {
	Dir           string
	Arch          string    // x86_64 or aarch64
	Manifest      *Manifest // nil if the directory has none
	KernelPath    string
	InitramfsPath string
	RootfsPath    string
	// Origin says which rule found it, e.g. "--base", "GONDOLIN_GUEST_DIR",
	// "image store ref alpine-base:latest", "download".
	Origin string
	// Remote is the build a run would download (BaseOptions.ResolveOnly);
	// the paths are then empty.
	Remote *RemoteBuild

	idOnce sync.Once
	id     BaseIdentity
	idErr  error
}

// BaseIdentity identifies a base for meta.json.
type BaseIdentity struct {
	BuildID   string    `json:"buildId,omitempty"`
	Arch      string    `json:"arch"`
	Checksums Checksums `json:"checksums"`
}

// Identity returns the base's build id, arch and asset checksums. Checksums
// are computed from the files (the manifest's are not trusted: a base can
// be edited in place); BuildID is the manifest's, or derived from the
// checksums when there is no manifest.
func (b *Base) Identity(ctx context.Context) (BaseIdentity, error) {
	b.idOnce.Do(func() {
		id := BaseIdentity{Arch: b.Arch}
		for _, f := range []struct {
			path string
			dst  *string
		}{{b.KernelPath, &id.Checksums.Kernel}, {b.InitramfsPath, &id.Checksums.Initramfs}, {b.RootfsPath, &id.Checksums.Rootfs}} {
			sum, err := HashFile(ctx, f.path)
			if err != nil {
				b.idErr = err
				return
			}
			*f.dst = sum
		}
		if b.Manifest != nil && b.Manifest.BuildID != "" {
			id.BuildID = b.Manifest.BuildID
			id.Checksums.KrunKernel = b.Manifest.Checksums.KrunKernel
			id.Checksums.KrunInitrd = b.Manifest.Checksums.KrunInitrd
		} else {
			id.BuildID = BuildID(id.Checksums, b.Arch)
		}
		b.id = id
	})
	return b.id, b.idErr
}

// FindBase finds a base bundle for the target platform, in this order:
// o.Dir (--base); GONDOLIN_GUEST_DIR; Gondolin's image store (ref
// GONDOLIN_DEFAULT_IMAGE or alpine-base:latest, for the target arch); the
// older ~/.cache/gondolin/v<version>/ layout (newest first); a download
// through Gondolin's image registry into the image store (unless
// o.NoDownload). An explicit --base or GONDOLIN_GUEST_DIR that does not
// hold a usable base is an error, not a reason to look further.
//
// Long: the places a base is looked for, in their order of precedence, each
// noting why it did not fit for the error that lists them all.
func FindBase(ctx context.Context, o BaseOptions) (*Base, error) {
	arch := NormalizeArch(o.Platform)
	if arch == "" {
		return nil, &hint.Error{Msg: fmt.Sprintf("unsupported target platform %q for a Gondolin base", o.Platform),
			Fixes: []string{"Use linux/amd64 or linux/arm64."}}
	}
	fixes := func() []string {
		return []string{
			"Pass --base DIR with a Gondolin guest directory (vmlinuz-virt, initramfs.cpio.lz4, rootfs.ext4) for " + arch + ".",
			"Or run `gondolin image pull " + o.DefaultImage() + "` on a machine with Gondolin (for a " + arch + " target: with that architecture).",
			"Or set GONDOLIN_GUEST_DIR to a Gondolin asset directory.",
		}
	}
	if dirs := o.explicitDirs(); len(dirs) == 1 {
		b, err := loadBase(dirs[0], "--base", arch, "")
		if err != nil {
			return nil, &hint.Error{Msg: "--base " + dirs[0] + " is not a usable Gondolin base", Err: err, Fixes: fixes()}
		}
		return b, nil
	} else if len(dirs) > 1 {
		var errs []string
		for _, d := range dirs {
			b, err := loadBase(d, "--base", arch, "")
			if err == nil {
				return b, nil
			}
			errs = append(errs, err.Error())
		}
		return nil, &hint.Error{Msg: "none of the --base directories is a usable Gondolin base for " + arch + ":\n    " + strings.Join(errs, "\n    "),
			Fixes: append([]string{"Add --base DIR with a base bundle for " + arch + "."}, fixes()[1:]...)}
	}
	if d := o.getenv("GONDOLIN_GUEST_DIR"); d != "" {
		b, err := loadBase(d, "GONDOLIN_GUEST_DIR", arch, "")
		if err != nil {
			return nil, &hint.Error{Msg: "GONDOLIN_GUEST_DIR=" + d + " is not a usable Gondolin base", Err: err,
				Fixes: append([]string{"Unset GONDOLIN_GUEST_DIR or point it at a complete " + arch + " asset directory."}, fixes()...)}
		}
		return b, nil
	}
	var looked []string
	looked = append(looked, "--base: not given", "GONDOLIN_GUEST_DIR: not set")

	store := o.StoreDir()
	selector := o.DefaultImage()
	if store != "" {
		b, where, err := findInStore(store, selector, arch)
		if b != nil {
			return b, nil
		}
		looked = append(looked, where+": "+err.Error())
	} else {
		looked = append(looked, "image store: no HOME, XDG_CACHE_HOME or GONDOLIN_IMAGE_STORE to locate it")
	}

	if c := o.cacheDir(); c != "" {
		b, notes := findLegacy(filepath.Join(c, "gondolin"), arch)
		if b != nil {
			return b, nil
		}
		looked = append(looked, notes...)
	}

	if o.NoDownload {
		looked = append(looked, "download: disabled")
	} else if store == "" {
		looked = append(looked, "download: no image store directory to download into")
	} else if o.ResolveOnly {
		rb, err := resolveDownload(ctx, o, selector, arch)
		if err == nil {
			return &Base{Arch: arch, Origin: "download " + selector, Remote: rb}, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		looked = append(looked, "download "+selector+" from "+o.RegistryURL()+": "+err.Error())
	} else {
		b, err := download(ctx, o, store, selector, arch)
		if err == nil {
			return b, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		looked = append(looked, "download "+selector+" from "+o.RegistryURL()+": "+err.Error())
	}
	return nil, &hint.Error{
		Msg: "no Gondolin base bundle for " + arch + " found; looked at:\n    " + strings.Join(looked, "\n    "),
		Fixes: append(fixes(), "Or pass --plain to write the image's own tree alone (rootfs mode): it needs no base, "+
			"and is not a bootable Gondolin guest by itself."),
	}
}

// findInStore resolves selector (a build id or name[:tag]) in an image
// store for arch. It returns where it looked for the error message.
func findInStore(store, selector, arch string) (*Base, string, error) {
	if IsBuildID(selector) {
		dir := filepath.Join(store, "objects", selector)
		b, err := loadBase(dir, "image store object "+selector, arch, "")
		return b, "image store " + dir, err
	}
	name, tag, err := ParseImageRef(selector)
	if err != nil {
		return nil, "GONDOLIN_DEFAULT_IMAGE", err
	}
	link := filepath.Join(store, "refs", filepath.FromSlash(name), tag, arch)
	where := "image store ref " + link
	target, err := os.Readlink(link)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			other := ArchX86_64
			if arch == ArchX86_64 {
				other = ArchAarch64
			}
			if _, e := os.Lstat(filepath.Join(filepath.Dir(link), other)); e == nil {
				return nil, where, fmt.Errorf("no %s:%s for %s (there is one for %s only)", name, tag, arch, other)
			}
			return nil, where, fmt.Errorf("no such ref")
		}
		return nil, where, err
	}
	if !filepath.IsAbs(target) {
		target = filepath.Join(filepath.Dir(link), target)
	}
	b, err := loadBase(target, "image store ref "+name+":"+tag, arch, arch)
	return b, where, err
}

// findLegacy looks at <cache>/gondolin/v<version>/ directories (Gondolin
// 0.5 and earlier), newest version first.
func findLegacy(root, arch string) (*Base, []string) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil, []string{"older cache " + filepath.Join(root, "v<version>") + ": none"}
	}
	type cand struct {
		name string
		ver  []int
	}
	var cs []cand
	for _, e := range ents {
		if v, ok := parseVersionDir(e.Name()); ok && e.IsDir() {
			cs = append(cs, cand{e.Name(), v})
		}
	}
	if len(cs) == 0 {
		return nil, []string{"older cache " + filepath.Join(root, "v<version>") + ": none"}
	}
	sort.Slice(cs, func(i, j int) bool { return versionLess(cs[j].ver, cs[i].ver) })
	var notes []string
	for _, c := range cs {
		dir := filepath.Join(root, c.name)
		b, err := loadBase(dir, "older Gondolin cache "+c.name, arch, "")
		if err == nil {
			return b, nil
		}
		notes = append(notes, "older cache "+dir+": "+err.Error())
	}
	return nil, notes
}

func parseVersionDir(name string) ([]int, bool) {
	if !strings.HasPrefix(name, "v") {
		return nil, false
	}
	s := name[1:]
	if i := strings.IndexAny(s, "-+"); i >= 0 {
		s = s[:i]
	}
	parts := strings.Split(s, ".")
	if len(parts) == 0 || len(parts) > 4 {
		return nil, false
	}
	v := make([]int, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return nil, false
		}
		v[i] = n
	}
	return v, true
}

func versionLess(a, b []int) bool {
	for i := 0; i < len(a) || i < len(b); i++ {
		var x, y int
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			return x < y
		}
	}
	return false
}

// loadBase checks that dir holds a base for arch. locArch is the
// architecture the location implies ("" if none): trusted only when
// neither a manifest nor the kernel header tells.
func loadBase(dir, origin, arch, locArch string) (*Base, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", dir)
	}
	b := &Base{Dir: dir, Origin: origin}
	assets := DefaultAssets()
	mpath := filepath.Join(dir, ManifestName)
	if data, err := readManifestFile(mpath); err == nil {
		m, err := parseBaseManifest(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", mpath, err)
		}
		b.Manifest = m
		assets = m.Assets
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	var missing []string
	check := func(name string) string {
		p := filepath.Join(dir, name)
		st, err := os.Stat(p) // a link to a kernel elsewhere is fine
		switch {
		case err != nil:
			missing = append(missing, name)
		case !st.Mode().IsRegular():
			missing = append(missing, name+" (a "+diskio.Kind(st.Mode())+", not a regular file)")
		}
		return p
	}
	b.KernelPath = check(assets.Kernel)
	b.InitramfsPath = check(assets.Initramfs)
	b.RootfsPath = check(assets.Rootfs)
	if assets.KrunKernel != "" {
		check(assets.KrunKernel)
	}
	if assets.KrunInitrd != "" {
		check(assets.KrunInitrd)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("missing guest assets in %s: %s", dir, strings.Join(missing, ", "))
	}
	switch {
	case b.Manifest != nil && b.Manifest.Config.Arch != "":
		b.Arch = NormalizeArch(b.Manifest.Config.Arch)
		// A manifest that names the wrong arch would boot nothing: the
		// host starts the emulator for the claimed arch.
		if k := KernelArch(b.KernelPath); k != "" && k != b.Arch {
			return nil, fmt.Errorf("base in %s: %s says config.arch %s but its kernel %s is an %s kernel",
				dir, ManifestName, b.Manifest.Config.Arch, assets.Kernel, k)
		}
	default:
		b.Arch = KernelArch(b.KernelPath)
		if b.Arch == "" {
			b.Arch = locArch
		}
		if b.Arch == "" {
			// Nothing tells: trust the user's choice of directory.
			b.Arch = arch
			b.Origin += " (architecture not recorded; assumed " + arch + ")"
		}
	}
	if b.Arch != arch {
		return nil, fmt.Errorf("base in %s is for %s but the target is %s", dir, b.Arch, arch)
	}
	return b, nil
}

// parseBaseManifest is lenient where ReadManifest is strict: a base we
// only read from needs confined asset names and, if given, a known arch.
func parseBaseManifest(data []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	if m.Assets == (Assets{}) {
		m.Assets = DefaultAssets()
	}
	var errs []error
	errs = append(errs, m.Assets.check()...)
	if m.Config.Arch != "" && NormalizeArch(m.Config.Arch) == "" {
		errs = append(errs, fmt.Errorf("config.arch %q is not x86_64 or aarch64", m.Config.Arch))
	}
	if m.BuildID != "" && !IsBuildID(m.BuildID) {
		errs = append(errs, fmt.Errorf("buildId %q is not a UUID", m.BuildID))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &m, nil
}

// KernelArch sniffs a kernel image: an x86 bzImage ("HdrS" at 0x202), an
// arm64 Image ("ARM\x64" at 0x38), or a PE/EFI image (arm64 EFI zboot,
// x86 EFI stub) by its COFF machine type. "" if it cannot tell (e.g. a
// gzip-compressed Image).
func KernelArch(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	hdr := make([]byte, 4096)
	n, _ := io.ReadFull(f, hdr)
	return kernelArch(hdr[:n])
}

func kernelArch(h []byte) string {
	if len(h) >= 0x206 && string(h[0x202:0x206]) == "HdrS" {
		return ArchX86_64
	}
	if len(h) >= 0x3c && bytes.Equal(h[0x38:0x3c], []byte("ARM\x64")) {
		return ArchAarch64
	}
	if len(h) >= 0x40 && h[0] == 'M' && h[1] == 'Z' {
		off := int(binary.LittleEndian.Uint32(h[0x3c:0x40]))
		if off >= 0 && off+6 <= len(h) && string(h[off:off+4]) == "PE\x00\x00" {
			switch binary.LittleEndian.Uint16(h[off+4 : off+6]) {
			case 0x8664:
				return ArchX86_64
			case 0xaa64:
				return ArchAarch64
			}
		}
	}
	return ""
}
