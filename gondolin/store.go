package gondolin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/internal/diskio"
	"github.com/docker2vm/docker2vm/internal/lock"
)

var (
	imageNamePattern    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]*$`)
	imageSegmentPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	imageTagPattern     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
)

// ParseImageRef splits a Gondolin image ref "name[:tag]" (tag defaults to
// latest; the last colon separates the tag) and validates it as Gondolin
// does: name segments of letters, digits, '.', '_', '-' separated by '/',
// none of them "." or "..".
func ParseImageRef(ref string) (name, tag string, err error) {
	s := strings.TrimSpace(ref)
	if s == "" {
		return "", "", fmt.Errorf("image reference must not be empty")
	}
	name, tag = s, "latest"
	if i := strings.LastIndexByte(s, ':'); i > 0 && i < len(s)-1 {
		name, tag = s[:i], s[i+1:]
	}
	if !imageNamePattern.MatchString(name) {
		return "", "", fmt.Errorf("invalid image name %q (allowed: letters, numbers, '.', '_', '-', '/')", name)
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "" || seg == "." || seg == ".." || !imageSegmentPattern.MatchString(seg) {
			return "", "", fmt.Errorf("invalid image name %q (bad segment %q)", name, seg)
		}
	}
	if !imageTagPattern.MatchString(tag) {
		return "", "", fmt.Errorf("invalid image tag %q (allowed: letters, numbers, '.', '_', '-')", tag)
	}
	return name, tag, nil
}

func randSuffix() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Import copies the asset directory dir into Gondolin's image store at
// storeDir, laid out as `gondolin image import DIR --tag name:tag` does in
// Gondolin 0.12: objects/<buildId>/ holds manifest.json (copied as is) and
// the assets under their manifest names, written to
// objects/.tmp-<buildId>-<rand> and renamed into place (an existing object
// with that build id is kept: same id, same content); then
// refs/<name>/<tag>/<arch> becomes a relative symlink to the object,
// replaced atomically (symlink at <link>.tmp-<rand>, renamed over it).
// An empty tag imports without touching refs. It returns the object dir.
//
// Long: the import's steps (manifest, assets copied and checked, the object
// renamed into place, the ref) share the temporary object and its claim,
// which every failure must release.
func Import(ctx context.Context, dir, tag, storeDir string) (string, error) {
	if storeDir == "" {
		return "", fmt.Errorf("no image store directory")
	}
	var name, rtag string
	if tag != "" {
		var err error
		if name, rtag, err = ParseImageRef(tag); err != nil {
			return "", &hint.Error{Msg: "cannot import " + dir, Err: err, Fixes: []string{"Use a tag like my-image:latest."}}
		}
	}
	m, mdata, err := readDirManifest(dir)
	if err != nil {
		return "", &hint.Error{Msg: "cannot import " + dir + " into the Gondolin image store", Err: err,
			Fixes: []string{"Convert with --mode assets so the directory has a manifest.json with a buildId and config.arch."}}
	}
	assets, err := importAssets(m)
	if err != nil {
		return "", &hint.Error{Msg: "cannot import " + dir + " into the Gondolin image store", Err: err,
			Fixes: []string{"Give each asset in " + filepath.Join(dir, ManifestName) + " its own file name (not manifest.json), or convert again with --mode assets."}}
	}
	arch := NormalizeArch(m.Config.Arch)
	objects := filepath.Join(storeDir, "objects")
	objectDir := filepath.Join(objects, m.BuildID)
	if _, err := os.Stat(objectDir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(objects, 0o755); err != nil {
			return "", err
		}
		// What killed imports left (a whole guest each) goes first; ours is
		// claimed so that a concurrent import leaves it alone.
		lock.Reclaim(objects, ".tmp-")
		tmp := filepath.Join(objects, ".tmp-"+m.BuildID+"-"+randSuffix())
		claim, err := lock.Claim(tmp)
		if err != nil {
			return "", fmt.Errorf("claiming %s: %w", tmp, err)
		}
		defer claim.Remove()
		if err := os.Mkdir(tmp, 0o755); err != nil {
			return "", err
		}
		done := false
		defer func() {
			if !done {
				os.RemoveAll(tmp)
			}
		}()
		// The manifest as read and validated above, not re-read.
		if err := diskio.WriteFile(filepath.Join(tmp, ManifestName), mdata, 0o644, false); err != nil {
			return "", err
		}
		for _, a := range assets {
			src, err := confinedRegular(dir, a.name)
			if err != nil {
				return "", err
			}
			dst := filepath.Join(tmp, a.name)
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return "", err
			}
			sum, err := copyAsset(ctx, src, dst)
			if err != nil {
				return "", err
			}
			// An object is trusted by its build id from now on (a later
			// import of the same id keeps it), so it must hold what the
			// manifest says.
			if a.sum != "" && sum != a.sum {
				return "", &hint.Error{Msg: fmt.Sprintf("cannot import %s: %s does not match its manifest checksum (%s %s, file sha256 %s)", dir, a.name, a.field, a.sum, sum),
					Fixes: []string{"The directory was changed after its manifest.json was written: convert again with --mode assets."}}
			}
		}
		if _, err := loadBase(tmp, "image store", arch, ""); err != nil {
			return "", fmt.Errorf("cannot import %s: %w", dir, err)
		}
		if err := os.Rename(tmp, objectDir); err != nil {
			if !errors.Is(err, os.ErrExist) && !errors.Is(err, syscall.ENOTEMPTY) {
				return "", err
			}
			// Imported concurrently by someone else: theirs stands.
		} else {
			done = true
		}
	} else if err != nil {
		return "", err
	}
	if _, err := loadBase(objectDir, "image store", arch, ""); err != nil {
		return "", fmt.Errorf("image store object %s: %w", objectDir, err)
	}
	if name != "" {
		if err := writeRef(storeDir, name, rtag, arch, objectDir); err != nil {
			return "", err
		}
	}
	return objectDir, nil
}

type importAsset struct{ field, name, sum string }

// importAssets lists a manifest's assets with their checksums. Names must
// be distinct files: not manifest.json, not one another, not a directory
// of another (an object is a plain directory of files).
func importAssets(m *Manifest) ([]importAsset, error) {
	all := []importAsset{
		{"assets.kernel", m.Assets.Kernel, m.Checksums.Kernel},
		{"assets.initramfs", m.Assets.Initramfs, m.Checksums.Initramfs},
		{"assets.rootfs", m.Assets.Rootfs, m.Checksums.Rootfs},
		{"assets.krunKernel", m.Assets.KrunKernel, m.Checksums.KrunKernel},
		{"assets.krunInitrd", m.Assets.KrunInitrd, m.Checksums.KrunInitrd},
	}
	var out []importAsset
	taken := []importAsset{{field: "the manifest", name: ManifestName}}
	for _, a := range all {
		if a.name == "" {
			continue
		}
		if err := localName(a.field, a.name); err != nil {
			return nil, err
		}
		a.name = filepath.Clean(a.name)
		for _, p := range taken {
			sep := string(filepath.Separator)
			switch {
			case a.name == p.name:
				return nil, fmt.Errorf("%s %q is also %s", a.field, a.name, p.field)
			case strings.HasPrefix(a.name, p.name+sep) || strings.HasPrefix(p.name, a.name+sep):
				return nil, fmt.Errorf("%s %q and %s %q are nested in one another", a.field, a.name, p.field, p.name)
			}
		}
		taken = append(taken, a)
		out = append(out, a)
	}
	return out, nil
}

// confinedRegular resolves name inside dir and requires a regular file
// whose real path stays inside dir's real path.
func confinedRegular(dir, name string) (string, error) {
	if err := localName("asset", name); err != nil {
		return "", err
	}
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", err
	}
	real, err := filepath.EvalSymlinks(filepath.Join(dir, name))
	if err != nil {
		return "", err
	}
	rel, err := filepath.Rel(realDir, real)
	if err != nil || !filepath.IsLocal(rel) {
		return "", fmt.Errorf("asset %q resolves to %s, outside %s", name, real, realDir)
	}
	st, err := os.Stat(real)
	if err != nil {
		return "", err
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("asset %q is not a regular file", name)
	}
	return real, nil
}

// refLink is the path of refs/<name>/<tag>/<arch> in storeDir.
func refLink(storeDir, name, tag, arch string) (string, error) {
	refs := filepath.Join(storeDir, "refs")
	link := filepath.Join(refs, filepath.FromSlash(name), tag, arch)
	if rel, err := filepath.Rel(refs, link); err != nil || !filepath.IsLocal(rel) {
		return "", fmt.Errorf("image ref %s:%s escapes %s", name, tag, refs)
	}
	return link, nil
}

// writeRef points refs/<name>/<tag>/<arch> at objectDir with a relative
// symlink, replacing any old link atomically.
func writeRef(storeDir, name, tag, arch, objectDir string) error {
	link, err := refLink(storeDir, name, tag, arch)
	if err != nil {
		return err
	}
	linkDir := filepath.Dir(link)
	if err := os.MkdirAll(linkDir, 0o755); err != nil {
		return err
	}
	absLinkDir, err := filepath.Abs(linkDir)
	if err != nil {
		return err
	}
	absObj, err := filepath.Abs(objectDir)
	if err != nil {
		return err
	}
	target, err := filepath.Rel(absLinkDir, absObj)
	if err != nil {
		return err
	}
	return setLink(link, target)
}

// setLink makes link a symlink to target, replacing what is there in one
// rename.
func setLink(link, target string) error {
	lock.Reclaim(filepath.Dir(link), filepath.Base(link)+".tmp-")
	tmp := link + ".tmp-" + randSuffix()
	claim, err := lock.Claim(tmp)
	if err != nil {
		return fmt.Errorf("claiming %s: %w", tmp, err)
	}
	defer claim.Remove()
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, link); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// ImportObjects imports each asset directory of dirs into the store's
// objects, touching no ref, and returns the object directories in order.
func ImportObjects(ctx context.Context, dirs []string, storeDir string) ([]string, error) {
	objs := make([]string, len(dirs))
	for i, d := range dirs {
		obj, err := Import(ctx, d, "", storeDir)
		if err != nil {
			return nil, err
		}
		objs[i] = obj
	}
	return objs, nil
}

// SetRefs points tag's ref at each of objs (objects of the store, one per
// architecture) together: should one fail, those already moved are put
// back as they were, so that the ref never names a mix of old and new
// builds for longer than the renames take.
func SetRefs(storeDir, tag string, objs []string) error {
	name, rtag, err := ParseImageRef(tag)
	if err != nil {
		return &hint.Error{Msg: "cannot tag as " + tag, Err: err, Fixes: []string{"Use a tag like my-image:latest."}}
	}
	// One docker2vm run at a time moves the refs of a store (the lock
	// beside objects/ and refs/, where Gondolin does not look).
	if err := os.MkdirAll(storeDir, 0o755); err != nil {
		return err
	}
	l, err := lock.Acquire(context.Background(), filepath.Join(storeDir, ".docker2vm-refs.lock"), nil)
	if err != nil {
		return err
	}
	defer l.Remove()
	type before struct {
		link, target string
		existed      bool
	}
	var done []before
	undo := func() {
		for i := len(done) - 1; i >= 0; i-- {
			b := done[i]
			if b.existed {
				_ = setLink(b.link, b.target)
			} else {
				_ = os.Remove(b.link)
			}
		}
	}
	for _, obj := range objs {
		m, _, err := readDirManifest(obj)
		if err != nil {
			undo()
			return err
		}
		arch := NormalizeArch(m.Config.Arch)
		link, err := refLink(storeDir, name, rtag, arch)
		if err != nil {
			undo()
			return err
		}
		b := before{link: link}
		if t, err := os.Readlink(link); err == nil {
			b.target, b.existed = t, true
		}
		if err := writeRef(storeDir, name, rtag, arch, obj); err != nil {
			undo()
			return err
		}
		done = append(done, b)
	}
	return nil
}
