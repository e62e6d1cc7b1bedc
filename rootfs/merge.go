package rootfs

import (
	"archive/tar"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"path"
	"sort"
	"strings"

	"github.com/docker2vm/docker2vm/fstree"
	"github.com/docker2vm/docker2vm/internal/confine"
)

const (
	whiteoutPrefix     = ".wh."
	whiteoutMetaPrefix = whiteoutPrefix + whiteoutPrefix // AUFS metadata
	whiteoutOpaque     = whiteoutMetaPrefix + ".opq"

	paxSchilyXattr     = "SCHILY.xattr."
	paxLibarchiveXattr = "LIBARCHIVE.xattr."

	xattrNameMax = 255       // XATTR_NAME_MAX
	xattrSizeMax = 64 * 1024 // XATTR_SIZE_MAX
)

// Stats counts what the merge did.
type Stats struct {
	Layers       int   // layers applied
	Entries      int64 // tar entries read, whiteouts included
	Bytes        int64 // file data bytes read (logical sizes, holes included)
	MetaBytes    int64 // xattr names and values and symlink targets
	Whiteouts    int64 // ".wh.NAME" entries
	Opaques      int64 // ".wh..wh..opq" markers
	Hardlinks    int64 // hardlink entries
	ImplicitDirs int64 // parent directories created because a layer omitted them
	Ignored      int64 // entries ignored: the root itself, PAX global headers, AUFS metadata
}

// Merger applies layers, in order, to one tree. It is not safe for
// concurrent use.
type Merger struct {
	store fstree.Store
	lim   Limits
	tree  *fstree.Tree
	stats Stats

	// Per-layer state for opaque markers and whiteouts: which (directory,
	// name) edges the current layer wrote or walked through, and its
	// opaque directories. gen numbers the layer being applied: an inode
	// the layer made, and a directory it wrote or walked through (a
	// directory has one name), is marked with it (Inode.Gen), so that
	// all its edges are the layer's; an older file or symlink the layer
	// links again or walks through has its edge recorded in upper (then
	// its other names stay the lower layers').
	gen     uint32
	upper   map[edge]struct{}
	opaques []*fstree.Inode
}

type edge struct {
	dir  *fstree.Inode
	name string
}

// New returns a Merger holding an empty tree whose file data goes to store.
func New(store fstree.Store, lim Limits) *Merger {
	return &Merger{store: store, lim: lim.withDefaults(), tree: fstree.New()}
}

// Resume returns a Merger that goes on where another stopped after a
// number of layers: tree is that Merger's tree (decoded from its
// encoding, fstree.Decode, with contents of store), stats its Stats then.
// Applying the remaining layers gives what the other Merger would have.
func Resume(store fstree.Store, lim Limits, tree *fstree.Tree, stats Stats) *Merger {
	return &Merger{store: store, lim: lim.withDefaults(), tree: tree, stats: stats, gen: uint32(stats.Layers)}
}

// Tree returns the merged tree. It stays owned by the Merger until the last
// Apply has returned.
func (m *Merger) Tree() *fstree.Tree { return m.tree }

// Stats returns the counters so far.
func (m *Merger) Stats() Stats { return m.stats }

func (m *Merger) release(c fstree.Content) { m.store.Release(c) }

// touch records that the current layer wrote or walked through name in dir.
func (m *Merger) touch(dir *fstree.Inode, name string) {
	c := dir.Child(name)
	switch {
	case c == nil:
	case c.Gen == m.gen:
	case c.Type == fstree.TypeDir:
		c.Gen = m.gen
	default:
		m.upper[edge{dir, name}] = struct{}{}
	}
}

// touched reports whether the current layer wrote or walked through name
// in dir.
func (m *Merger) touched(dir *fstree.Inode, name string) bool {
	if c := dir.Child(name); c != nil && c.Gen == m.gen {
		return true
	}
	_, ok := m.upper[edge{dir, name}]
	return ok
}

// countEntry counts one tree entry against Limits.MaxEntries.
func (m *Merger) countEntry() error {
	if m.stats.Entries+m.stats.ImplicitDirs+1 > int64(m.lim.MaxEntries) {
		return &LimitError{What: "number of entries", Limit: int64(m.lim.MaxEntries), Flag: "--max-entries"}
	}
	return nil
}

// countBytes counts n uncompressed bytes against Limits.MaxBytes. Rule:
// sizes are counted from the header before the data is read, so a
// decompression bomb stops at its first oversized entry (TestGzipBomb).
func (m *Merger) countBytes(n int64, meta bool) error {
	if n < 0 || m.stats.Bytes+m.stats.MetaBytes > m.lim.MaxBytes-n {
		return &LimitError{What: "total uncompressed size", Limit: m.lim.MaxBytes, Flag: "--max-bytes"}
	}
	if meta {
		m.stats.MetaBytes += n
	} else {
		m.stats.Bytes += n
	}
	return nil
}

// Apply applies one layer, an uncompressed tar stream, on top of the layers
// applied before. index and name (e.g. the layer digest) only label errors.
// After an error the tree is partly updated and should be discarded.
func (m *Merger) Apply(ctx context.Context, name string, r io.Reader) error {
	m.gen++
	m.upper = make(map[edge]struct{})
	m.opaques = m.opaques[:0]
	defer func() { m.upper, m.opaques = nil, nil }()

	tr := tar.NewReader(r)
	last := ""
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			where := "at its start"
			if last != "" {
				where = fmt.Sprintf("after entry %s", shown(last))
			}
			return fmt.Errorf("%s: reading the tar stream %s: %w (the layer is truncated or not a tar archive: %w)", name, where, err, ErrMalformed)
		}
		last = hdr.Name
		if err := m.entry(ctx, tr, hdr); err != nil {
			return fmt.Errorf("%s: entry %s: %w", name, shown(hdr.Name), err)
		}
	}
	// Rule: an opaque directory holds exactly what this layer put in it,
	// wherever the marker stood in the tar (tests: "opaque before entries",
	// "opaque after entries").
	for _, d := range m.opaques {
		m.prune(d)
	}
	m.stats.Layers++
	return nil
}

// prune removes every child of dir that the current layer did not write or
// walk through, recursively: below an opaque directory nothing of the lower
// layers is visible.
func (m *Merger) prune(dir *fstree.Inode) {
	for name, c := range dir.Children() {
		if !m.touched(dir, name) {
			fstree.Unlink(dir, name, m.release)
			continue
		}
		if c.Type == fstree.TypeDir {
			m.prune(c)
		}
	}
}

// entry applies one tar entry of a layer to the tree.
//
// Long: one case per tar entry type (whiteouts, directories, files, hard
// and symbolic links, devices, FIFOs), each applied as overlayfs would,
// with the limits checked as the entry is read.
func (m *Merger) entry(ctx context.Context, tr *tar.Reader, hdr *tar.Header) error {
	if err := m.countEntry(); err != nil {
		return err
	}
	m.stats.Entries++

	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		m.stats.Ignored++
		return nil
	case tar.TypeReg, tar.TypeGNUSparse, tar.TypeDir, tar.TypeSymlink, tar.TypeLink,
		tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
	default:
		// Rule: unknown entry types are errors, not skipped: their meaning
		// is unknown. Their data is never read (test: "unknown entry type").
		return malformed("unsupported tar entry type %q", hdr.Typeflag)
	}
	if len(hdr.Name) > m.lim.MaxPathLen {
		return &LimitError{What: fmt.Sprintf("name length (%d bytes)", len(hdr.Name)), Limit: int64(m.lim.MaxPathLen), Flag: "--max-path"}
	}
	if len(hdr.Linkname) > m.lim.MaxPathLen {
		return &LimitError{What: fmt.Sprintf("link target length (%d bytes)", len(hdr.Linkname)), Limit: int64(m.lim.MaxPathLen), Flag: "--max-path"}
	}
	if hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeGNUSparse {
		if err := m.countBytes(hdr.Size, false); err != nil {
			return err
		}
	}

	clean := cleanName(hdr.Name)
	if err := checkName(clean); err != nil {
		return err
	}
	if clean == "/" {
		// Rule: an entry naming the root is ignored (containerd: "resolved
		// to root"); the root is always a root-owned 0755 directory
		// (tests: "root entries ignored", "symlink named .. is ignored").
		m.stats.Ignored++
		return nil
	}
	dirPath, base := path.Split(clean)
	if strings.Contains(dirPath, "/"+whiteoutMetaPrefix) {
		m.stats.Ignored++ // below AUFS metadata such as .wh..wh.plnk
		return nil
	}
	if strings.HasPrefix(base, whiteoutPrefix) {
		return m.whiteout(dirPath, base)
	}

	parent, err := m.dir(dirPath, true, true)
	if err != nil {
		return err
	}

	if hdr.Typeflag == tar.TypeLink {
		return m.hardlink(parent, base, hdr)
	}

	if hdr.Typeflag == tar.TypeDir {
		if old := parent.Child(base); old != nil && old.Type == fstree.TypeDir {
			// Rule: a directory over a directory keeps the children and
			// takes the new metadata (tests: "directory after its children",
			// "directory over directory keeps children, takes metadata").
			if err := m.setMeta(old, hdr); err != nil {
				return err
			}
			m.touch(parent, base)
			return nil
		}
	}

	n := &fstree.Inode{Gen: m.gen}
	if err := m.setMeta(n, hdr); err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		n.Type = fstree.TypeDir
	case tar.TypeReg, tar.TypeGNUSparse:
		n.Type = fstree.TypeRegular
		if hdr.Size > 0 {
			c, err := m.store.Put(ctx, tr, hdr.Size)
			if err != nil {
				return fmt.Errorf("storing %d bytes of file data: %w", hdr.Size, err)
			}
			n.Content = c
		}
	case tar.TypeSymlink:
		n.Type = fstree.TypeSymlink
		if strings.IndexByte(hdr.Linkname, 0) >= 0 {
			return malformed("symlink target contains a NUL byte")
		}
		if err := m.countBytes(int64(len(hdr.Linkname)), true); err != nil {
			return err
		}
		n.Target = hdr.Linkname
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		n.Type = fstree.TypeFIFO
		if hdr.Typeflag != tar.TypeFifo {
			n.Type = fstree.TypeCharDev
			if hdr.Typeflag == tar.TypeBlock {
				n.Type = fstree.TypeBlockDev
			}
			// Linux device numbers: 12-bit major, 20-bit minor.
			if hdr.Devmajor < 0 || hdr.Devmajor > 0xfff || hdr.Devminor < 0 || hdr.Devminor > 0xfffff {
				return malformed("device number %d:%d is out of range", hdr.Devmajor, hdr.Devminor)
			}
			n.Major, n.Minor = uint32(hdr.Devmajor), uint32(hdr.Devminor)
		}
	}
	// Rule: the final component is not followed: the entry replaces
	// whatever is there, symlink or subtree (tests: "file replaces
	// symlink not its target", "symlink replaces directory subtree", "file
	// replaces directory subtree"). The name is copied: base is part of
	// the entry's whole path, which the tree would otherwise keep.
	fstree.Link(parent, strings.Clone(base), n, m.release)
	return nil
}

// whiteout applies ".wh.NAME" or an opaque marker found in directory dirPath.
func (m *Merger) whiteout(dirPath, base string) error {
	if strings.HasPrefix(base, whiteoutMetaPrefix) && base != whiteoutOpaque {
		m.stats.Ignored++ // AUFS metadata, e.g. .wh..wh.plnk
		return nil
	}
	target := strings.TrimPrefix(base, whiteoutPrefix)
	if base != whiteoutOpaque && (target == "" || target == "." || target == "..") {
		// Rule: a whiteout must name an entry of its directory, never the
		// directory itself, its parent or the root (containerd
		// validateWhiteout; tests: "whiteout root", "whiteout parent",
		// "whiteout current directory").
		return malformed("whiteout %s does not name an entry of its directory", shown(base))
	}
	// Rule: whiteouts resolve their directory inside the image like any
	// name, but create nothing: in a missing directory they are no-ops
	// (tests: "whiteout through symlink path", "whiteout dead symlink
	// parent").
	// An opaque marker's directory is part of this layer (it holds the
	// marker), so its path is recorded like a parent's.
	dir, err := m.dir(dirPath, false, base == whiteoutOpaque)
	if err != nil {
		if errors.Is(err, confine.ErrNotExist) {
			return nil
		}
		return err
	}
	if base == whiteoutOpaque {
		m.stats.Opaques++
		m.opaques = append(m.opaques, dir)
		return nil
	}
	m.stats.Whiteouts++
	// Rule: a whiteout hides lower layers only; what its own layer put
	// at the name stays (OCI layer spec: "files that are present in the
	// same layer as a whiteout file can only be hidden by whiteout files
	// in subsequent layers"; umoci agrees). A directory this layer wrote
	// into keeps only this layer's entries, like an opaque one (tests:
	// "whiteout keeps entries of its own layer").
	if m.touched(dir, target) {
		if c := dir.Child(target); c != nil && c.Type == fstree.TypeDir {
			m.prune(c)
		}
		return nil
	}
	fstree.Unlink(dir, target, m.release)
	return nil
}

// hardlink links name in parent to the inode at hdr.Linkname.
func (m *Merger) hardlink(parent *fstree.Inode, name string, hdr *tar.Header) error {
	m.stats.Hardlinks++
	clean := cleanName(hdr.Linkname)
	if err := checkName(clean); err != nil {
		return fmt.Errorf("hardlink target %s: %w", shown(hdr.Linkname), err)
	}
	if clean == "/" {
		return malformed("hardlink to %s names the root directory", shown(hdr.Linkname))
	}
	// Rule: hardlink targets resolve inside the image like entry names:
	// ".." clamps at the root, symlinked parents are followed inside the
	// image, the final component is not followed (tests: "hardlink
	// relative", "hardlink absolute", "hardlink down and out", "hardlink
	// relative up and out", "hardlink to symlink relative").
	tdir, tbase := path.Split(clean)
	dir, err := m.dir(tdir, false, false)
	if err != nil {
		if errors.Is(err, confine.ErrNotExist) {
			return malformed("hardlink target %s does not exist (%v) at this point of the image", shown(hdr.Linkname), err)
		}
		return fmt.Errorf("hardlink target %s: %w", shown(hdr.Linkname), err)
	}
	target := dir.Child(tbase)
	if target == nil {
		// Rule: a hardlink to a missing target is an error naming both
		// (test: "hardlink created before its target").
		return malformed("hardlink target %s does not exist at this point of the image (hardlinks must name a file of the same layer, earlier in the tar, or of a lower layer)", shown(hdr.Linkname))
	}
	if target.Type == fstree.TypeDir {
		return malformed("hardlink target %s is a directory", shown(hdr.Linkname))
	}
	// The old entry at name may be the target's last other link or a
	// directory holding it: Link counts the new name first, so the target
	// and its content stay.
	fstree.Link(parent, strings.Clone(name), target, m.release)
	m.touch(parent, name)
	return nil
}

// setMeta sets n's metadata (not its type) from hdr. Xattrs are replaced.
func (m *Merger) setMeta(n *fstree.Inode, hdr *tar.Header) error {
	if hdr.Uid < 0 || int64(hdr.Uid) > math.MaxUint32 || hdr.Gid < 0 || int64(hdr.Gid) > math.MaxUint32 {
		return malformed("uid/gid %d/%d out of range", hdr.Uid, hdr.Gid)
	}
	// Rule: the full permission bits are kept, setuid/setgid/sticky and
	// mode 0 included (test: "modes").
	n.Mode = uint32(hdr.Mode) & 0o7777
	n.UID, n.GID = uint32(hdr.Uid), uint32(hdr.Gid)
	n.Mtime = stamp(hdr.ModTime.Unix(), hdr.ModTime.Nanosecond())
	n.Atime = n.Mtime
	if hdr.AccessTime.After(hdr.ModTime) {
		n.Atime = stamp(hdr.AccessTime.Unix(), hdr.AccessTime.Nanosecond())
	}
	n.Ctime = n.Mtime
	if !hdr.ChangeTime.IsZero() {
		n.Ctime = stamp(hdr.ChangeTime.Unix(), hdr.ChangeTime.Nanosecond())
	}
	xs, err := xattrs(hdr.PAXRecords)
	if err != nil {
		return err
	}
	for _, x := range xs {
		if err := m.countBytes(int64(len(x.Name)+len(x.Value)), true); err != nil {
			return err
		}
	}
	if hdr.Typeflag != tar.TypeReg && hdr.Typeflag != tar.TypeGNUSparse && hdr.Typeflag != tar.TypeDir {
		// Rule: user.* xattrs exist only on files and directories: Linux
		// refuses them elsewhere and containerd drops them with a warning
		// (test: "user xattrs on special files dropped").
		kept := xs[:0]
		for _, x := range xs {
			if !strings.HasPrefix(x.Name, "user.") {
				kept = append(kept, x)
			}
		}
		xs = kept
	}
	if len(xs) == 0 {
		xs = nil
	}
	n.Xattrs = xs
	return nil
}

func stamp(sec int64, nsec int) fstree.Timestamp {
	return fstree.Timestamp{Sec: sec, Nsec: uint32(nsec)}
}

// xattrs collects the extended attributes of a PAX header, sorted by name.
// Rule: Linux limits apply: names up to 255 bytes without NUL, values up to
// 64 KiB (tests: "xattr name too long", "xattr value too big").
func xattrs(recs map[string]string) ([]fstree.Xattr, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	set := map[string][]byte{}
	// LIBARCHIVE.xattr.<url-escaped name>=<base64 value>; SCHILY wins below.
	for k, v := range recs {
		enc, ok := strings.CutPrefix(k, paxLibarchiveXattr)
		if !ok {
			continue
		}
		name, err := url.PathUnescape(enc)
		if err != nil {
			return nil, malformed("xattr record %s: bad name escape", shown(k))
		}
		val, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(v, "="))
		if err != nil {
			return nil, malformed("xattr record %s: value is not base64", shown(k))
		}
		set[name] = val
	}
	for k, v := range recs {
		if name, ok := strings.CutPrefix(k, paxSchilyXattr); ok {
			set[name] = []byte(v)
		}
	}
	xs := make([]fstree.Xattr, 0, len(set))
	for name, val := range set {
		if name == "" || len(name) > xattrNameMax || strings.IndexByte(name, 0) >= 0 || !strings.Contains(name, ".") {
			return nil, malformed("invalid xattr name %s", shown(name))
		}
		if len(val) > xattrSizeMax {
			return nil, malformed("xattr %s value of %d bytes exceeds the %d bytes Linux allows", shown(name), len(val), xattrSizeMax)
		}
		xs = append(xs, fstree.Xattr{Name: name, Value: val})
	}
	sort.Slice(xs, func(i, j int) bool { return xs[i].Name < xs[j].Name })
	return xs, nil
}
