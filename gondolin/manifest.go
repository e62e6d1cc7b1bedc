package gondolin

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/internal/diskio"
	"github.com/docker2vm/docker2vm/internal/sparse"
)

// ManifestName is the asset manifest's file name inside an asset directory.
const ManifestName = "manifest.json"

// Default asset file names (Gondolin's, used when a directory has no
// manifest and for everything we write).
const (
	KernelName     = "vmlinuz-virt"
	InitramfsName  = "initramfs.cpio.lz4"
	RootfsName     = "rootfs.ext4"
	KrunKernelName = "krun-kernel"
	KrunInitrdName = "krun-empty-initrd"
)

// RootfsMode is how Gondolin attaches rootfs.ext4 by default.
type RootfsMode string

const (
	RootfsCOW      RootfsMode = "cow"      // qcow2 overlay (Gondolin's default)
	RootfsMemory   RootfsMode = "memory"   // QEMU snapshot=on
	RootfsReadonly RootfsMode = "readonly" // read-only block device
)

// ParseRootfsMode validates a mode; "" means cow.
func ParseRootfsMode(s string) (RootfsMode, error) {
	switch m := RootfsMode(strings.ToLower(strings.TrimSpace(s))); m {
	case "":
		return RootfsCOW, nil
	case RootfsCOW, RootfsMemory, RootfsReadonly:
		return m, nil
	}
	return "", &hint.Error{Msg: fmt.Sprintf("unknown rootfs mode %q", s),
		Fixes: []string{"Use one of cow (the default), memory or readonly."}}
}

// Manifest is Gondolin's manifest.json (version 1, as Gondolin 0.12 writes
// it). Unknown fields of a manifest we read (Gondolin copies its whole build
// config into "config") are ignored.
type Manifest struct {
	Version         int              `json:"version"`
	BuildID         string           `json:"buildId"`
	Config          ManifestConfig   `json:"config"`
	RuntimeDefaults *RuntimeDefaults `json:"runtimeDefaults,omitempty"`
	BuildTime       string           `json:"buildTime,omitempty"`
	Assets          Assets           `json:"assets"`
	Checksums       Checksums        `json:"checksums"`
	OCISource       *OCISource       `json:"ociSource,omitempty"`
}

// ManifestConfig is the part of the build config that matters: the runtime
// reads only Arch (to pick the QEMU binary).
type ManifestConfig struct {
	Arch            string           `json:"arch"`
	Distro          string           `json:"distro,omitempty"`
	RuntimeDefaults *RuntimeDefaults `json:"runtimeDefaults,omitempty"`
}

// RuntimeDefaults are the runtime's defaults for this guest.
type RuntimeDefaults struct {
	RootfsMode RootfsMode `json:"rootfsMode,omitempty"`
}

// Assets are the asset file names, relative to the asset directory.
type Assets struct {
	Kernel     string `json:"kernel"`
	Initramfs  string `json:"initramfs"`
	Rootfs     string `json:"rootfs"`
	KrunKernel string `json:"krunKernel,omitempty"`
	KrunInitrd string `json:"krunInitrd,omitempty"`
}

// Checksums are lowercase sha256 hex digests (no prefix) of the assets.
type Checksums struct {
	Kernel     string `json:"kernel"`
	Initramfs  string `json:"initramfs"`
	Rootfs     string `json:"rootfs"`
	KrunKernel string `json:"krunKernel,omitempty"`
	KrunInitrd string `json:"krunInitrd,omitempty"`
}

// OCISource records where the rootfs came from (informational).
type OCISource struct {
	Image      string `json:"image"`
	Runtime    string `json:"runtime"`
	Platform   string `json:"platform"`
	PullPolicy string `json:"pullPolicy"`
	Digest     string `json:"digest"`
}

// DefaultAssets are the names Gondolin assumes without a manifest.
func DefaultAssets() Assets {
	return Assets{Kernel: KernelName, Initramfs: InitramfsName, Rootfs: RootfsName}
}

// buildIDNamespace is Gondolin's fixed namespace for asset build ids.
var buildIDNamespace = mustUUID("7b6ed0c0-7e7f-4c2a-8b2d-0bf3d5be9d52")

// BuildID is Gondolin's content-derived build id: a UUIDv5 over
// "gondolin-asset-build", "kernel=..", "initramfs=..", "rootfs=..",
// optional "krunKernel=..", "krunInitrd=..", then "arch=..", joined by "\n".
// An empty arch becomes "unknown", as in Gondolin.
func BuildID(c Checksums, arch string) string {
	if arch == "" {
		arch = "unknown"
	}
	parts := []string{
		"gondolin-asset-build",
		"kernel=" + c.Kernel,
		"initramfs=" + c.Initramfs,
		"rootfs=" + c.Rootfs,
	}
	if c.KrunKernel != "" {
		parts = append(parts, "krunKernel="+c.KrunKernel)
	}
	if c.KrunInitrd != "" {
		parts = append(parts, "krunInitrd="+c.KrunInitrd)
	}
	parts = append(parts, "arch="+arch)
	return uuidV5(buildIDNamespace, strings.Join(parts, "\n"))
}

// uuidV5 is RFC 4122 name-based UUID with SHA-1.
func uuidV5(ns [16]byte, name string) string {
	h := sha1.New()
	h.Write(ns[:])
	h.Write([]byte(name))
	var b [16]byte
	copy(b[:], h.Sum(nil))
	b[6] = b[6]&0x0f | 0x50
	b[8] = b[8]&0x3f | 0x80
	x := hex.EncodeToString(b[:])
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:]
}

func mustUUID(s string) [16]byte {
	var b [16]byte
	raw, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(raw) != 16 {
		panic("bad uuid " + s)
	}
	copy(b[:], raw)
	return b
}

// buildIDPattern is the shape Gondolin accepts for a build id.
var buildIDPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[1-5][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// IsBuildID reports whether s is shaped like a Gondolin build id.
func IsBuildID(s string) bool { return buildIDPattern.MatchString(s) }

var sha256Pattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

// localName checks that an asset name is a relative path that stays inside
// its directory.
func localName(field, name string) error {
	if strings.TrimSpace(name) == "" {
		return fmt.Errorf("%s: empty name", field)
	}
	if filepath.IsAbs(name) || strings.HasPrefix(name, "/") {
		return fmt.Errorf("%s: absolute path %q is not allowed", field, name)
	}
	clean := filepath.Clean(name)
	if clean == "." || !filepath.IsLocal(name) || strings.ContainsRune(name, '\\') {
		return fmt.Errorf("%s: path %q must stay inside the asset directory", field, name)
	}
	return nil
}

// check confines every asset name to the asset directory; the krun assets
// are optional.
func (a Assets) check() []error {
	var errs []error
	for _, f := range []struct {
		field, name string
		optional    bool
	}{
		{"assets.kernel", a.Kernel, false}, {"assets.initramfs", a.Initramfs, false}, {"assets.rootfs", a.Rootfs, false},
		{"assets.krunKernel", a.KrunKernel, true}, {"assets.krunInitrd", a.KrunInitrd, true},
	} {
		if f.optional && f.name == "" {
			continue
		}
		if err := localName(f.field, f.name); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// Validate checks a manifest the way we rely on it: version 1, a valid
// config.arch, a UUID-shaped buildId, asset names confined to the directory
// and well-formed checksums (when present).
func (m *Manifest) Validate() error {
	var errs []error
	if m.Version != 1 {
		errs = append(errs, fmt.Errorf("version is %d, want 1", m.Version))
	}
	if NormalizeArch(m.Config.Arch) == "" {
		errs = append(errs, fmt.Errorf("config.arch %q is not x86_64 or aarch64 (amd64, arm64, x64 accepted)", m.Config.Arch))
	}
	if !IsBuildID(m.BuildID) {
		errs = append(errs, fmt.Errorf("buildId %q is not a UUID", m.BuildID))
	}
	errs = append(errs, m.Assets.check()...)
	for _, f := range []struct{ field, sum string }{
		{"checksums.kernel", m.Checksums.Kernel}, {"checksums.initramfs", m.Checksums.Initramfs},
		{"checksums.rootfs", m.Checksums.Rootfs}, {"checksums.krunKernel", m.Checksums.KrunKernel},
		{"checksums.krunInitrd", m.Checksums.KrunInitrd},
	} {
		if f.sum != "" && !sha256Pattern.MatchString(f.sum) {
			errs = append(errs, fmt.Errorf("%s %q is not lowercase sha256 hex", f.field, f.sum))
		}
	}
	if m.RuntimeDefaults != nil && m.RuntimeDefaults.RootfsMode != "" {
		if _, err := ParseRootfsMode(string(m.RuntimeDefaults.RootfsMode)); err != nil {
			errs = append(errs, fmt.Errorf("runtimeDefaults.rootfsMode: %w", err))
		}
	}
	return errors.Join(errs...)
}

// maxManifestSize bounds what we read as manifest.json.
const maxManifestSize = 1 << 20

// ReadManifest reads and validates a manifest.json.
func ReadManifest(path string) (*Manifest, error) {
	data, err := readManifestFile(path)
	if err != nil {
		return nil, err
	}
	return parseManifest(path, data)
}

// readManifestFile reads a manifest.json of at most maxManifestSize bytes.
// It must be a regular file: a FIFO or a device (say a manifest.json
// symlinked to /dev/zero) would block or never end.
func readManifestFile(path string) ([]byte, error) {
	if st, err := os.Stat(path); err != nil {
		return nil, err
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return nil, err
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxManifestSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxManifestSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxManifestSize)
	}
	return data, nil
}

// readDirManifest reads and validates the manifest.json of the asset
// directory dir, returning it and its bytes.
func readDirManifest(dir string) (*Manifest, []byte, error) {
	mpath := filepath.Join(dir, ManifestName)
	data, err := readManifestFile(mpath)
	if err != nil {
		return nil, nil, err
	}
	m, err := parseManifest(mpath, data)
	return m, data, err
}

func parseManifest(path string, data []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%s: not valid JSON: %w", path, err)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("%s: invalid Gondolin manifest: %w", path, err)
	}
	return &m, nil
}

// AssetOptions configure WriteAssets.
type AssetOptions struct {
	RootfsMode RootfsMode // "" means cow
	OCISource  *OCISource // optional, informational
	// BuildTime is recorded as buildTime; the zero time means now. Pass a
	// time derived from the image for reproducible output.
	BuildTime time.Time
	// RootfsSHA256 is the rootfs's sha256 (hex) when the caller already
	// knows it, for a rootfs inside dir; empty means hash the file.
	RootfsSHA256 string
}

// WriteAssets makes dir a complete Gondolin asset directory around a
// rootfs.ext4 that is already written: it copies the base's kernel and
// initramfs (and its krun assets, when its manifest lists them) under the
// default names, hashes all assets and writes manifest.json. rootfsPath
// should be inside dir (its name there becomes assets.rootfs); a rootfs
// outside dir is copied in as rootfs.ext4. Every file is written under a
// temporary name and renamed into place.
func WriteAssets(ctx context.Context, dir string, base *Base, rootfsPath string, o AssetOptions) (*Manifest, error) {
	mode, err := ParseRootfsMode(string(o.RootfsMode))
	if err != nil {
		return nil, err
	}
	arch := NormalizeArch(base.Arch)
	if arch == "" {
		return nil, fmt.Errorf("base bundle %s: unknown architecture %q", base.Dir, base.Arch)
	}
	m := &Manifest{
		Version:         1,
		Config:          ManifestConfig{Arch: arch, RuntimeDefaults: &RuntimeDefaults{RootfsMode: mode}},
		RuntimeDefaults: &RuntimeDefaults{RootfsMode: mode},
		Assets:          DefaultAssets(),
		OCISource:       o.OCISource,
	}
	bt := o.BuildTime
	if bt.IsZero() {
		bt = time.Now()
	}
	m.BuildTime = bt.UTC().Format("2006-01-02T15:04:05.000Z")

	// The rootfs: hash in place, or copy in.
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	absRootfs, err := filepath.Abs(rootfsPath)
	if err != nil {
		return nil, err
	}
	if rel, err := filepath.Rel(absDir, absRootfs); err == nil && filepath.IsLocal(rel) && !strings.ContainsRune(rel, filepath.Separator) {
		m.Assets.Rootfs = rel
		m.Checksums.Rootfs = o.RootfsSHA256
		if m.Checksums.Rootfs == "" {
			if m.Checksums.Rootfs, err = HashFile(ctx, absRootfs); err != nil {
				return nil, fmt.Errorf("hashing %s: %w", rootfsPath, err)
			}
		}
	} else {
		if m.Checksums.Rootfs, err = copyAsset(ctx, absRootfs, filepath.Join(dir, RootfsName)); err != nil {
			return nil, err
		}
	}
	if m.Checksums.Kernel, err = copyAsset(ctx, base.KernelPath, filepath.Join(dir, KernelName)); err != nil {
		return nil, err
	}
	if m.Checksums.Initramfs, err = copyAsset(ctx, base.InitramfsPath, filepath.Join(dir, InitramfsName)); err != nil {
		return nil, err
	}
	if bm := base.Manifest; bm != nil {
		if bm.Assets.KrunKernel != "" {
			m.Assets.KrunKernel = KrunKernelName
			if m.Checksums.KrunKernel, err = copyAsset(ctx, filepath.Join(base.Dir, bm.Assets.KrunKernel), filepath.Join(dir, KrunKernelName)); err != nil {
				return nil, err
			}
		}
		if bm.Assets.KrunInitrd != "" {
			m.Assets.KrunInitrd = KrunInitrdName
			if m.Checksums.KrunInitrd, err = copyAsset(ctx, filepath.Join(base.Dir, bm.Assets.KrunInitrd), filepath.Join(dir, KrunInitrdName)); err != nil {
				return nil, err
			}
		}
	}
	m.BuildID = BuildID(m.Checksums, m.Config.Arch)
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("internal error: generated manifest is invalid: %w", err)
	}
	if err := writeManifest(filepath.Join(dir, ManifestName), m); err != nil {
		return nil, err
	}
	return m, nil
}

// writeManifest writes m as indented JSON, atomically.
func writeManifest(path string, m *Manifest) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return diskio.WriteFile(path, append(data, '\n'), 0o644, false)
}

// ctxReader makes long copies cancellable.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// HashFile returns the sha256 (hex) of a file's content, as manifest.json
// records it.
func HashFile(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, ctxReader{ctx, f}, make([]byte, 1<<20)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// copyAsset copies a regular file to dst (via a temporary name in dst's
// directory, renamed at the end) and returns the sha256 hex of the bytes.
func copyAsset(ctx context.Context, src, dst string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return "", err
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", src)
	}
	// A clone where the filesystem has them (APFS, btrfs, XFS) writes no
	// data at all; it is read back to hash it.
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-"+randSuffix())
	if diskio.Clone(in, tmp) == nil {
		sum, err := HashFile(ctx, tmp)
		if err == nil {
			err = os.Rename(tmp, dst)
		}
		if err != nil {
			os.Remove(tmp)
			return "", err
		}
		return sum, nil
	}
	out, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", err
	}
	ok := false
	defer func() {
		if !ok {
			out.Close()
			os.Remove(tmp)
		}
	}()
	// A sparse copy: a guest's rootfs.ext4 is mostly holes, and a dense
	// copy would take its whole apparent size on disk.
	h := sha256.New()
	sw := sparse.NewWriter(out)
	if _, err := io.CopyBuffer(io.MultiWriter(sw, h), ctxReader{ctx, in}, make([]byte, 1<<20)); err != nil {
		return "", fmt.Errorf("copying %s to %s: %w", src, dst, err)
	}
	if err := sw.Close(); err != nil {
		return "", err
	}
	if err := out.Chmod(0o644); err != nil {
		return "", err
	}
	if err := out.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return "", err
	}
	ok = true
	return hex.EncodeToString(h.Sum(nil)), nil
}
