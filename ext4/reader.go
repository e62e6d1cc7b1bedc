package ext4

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"

	"github.com/docker2vm/docker2vm/fstree"
	"github.com/docker2vm/docker2vm/internal/confine"
)

// FS reads an ext2/3/4 image: one made by mke2fs (1 KiB to 64 KiB blocks,
// 32- or 64-bit, with or without journal and metadata_csum, extents or
// block maps, htree and inline_data directories) or by the Writer. Nothing is
// cached beyond the superblock and group descriptors; every size read from
// the image is checked against the image size before it is allocated, so a
// hostile image gives an error, not a panic or runaway allocation.
// Checksums are not verified. The journal is not replayed.
type FS struct {
	r         io.ReaderAt
	size      int64
	sb        superblock
	bs        int64
	groups    uint64
	ipg       uint32
	inodeSize int
	descSize  int
	itables   []uint64 // inode table block of each group
}

// Inode is the metadata of one inode as stored in the image.
type Inode struct {
	Ino   uint32
	Type  fstree.Type
	Mode  uint32 // permission bits (07777)
	UID   uint32
	GID   uint32
	Size  int64
	Links uint32
	Atime fstree.Timestamp
	Mtime fstree.Timestamp
	Ctime fstree.Timestamp
	// Major and Minor are a device node's numbers.
	Major, Minor uint32
	// Flags are the raw i_flags.
	Flags uint32

	raw    []byte // the on-disk inode
	blocks uint64 // i_blocks in 512-byte units
}

// DirEntry is one directory entry ("." and ".." are left out).
type DirEntry struct {
	Name string
	Ino  uint32
	Type fstree.Type // 0 when the image has no filetype feature
}

// ErrNotExist, wrapped, is returned for a missing path.
var ErrNotExist = fs.ErrNotExist

const (
	incompatSupported = incompatFiletype | incompatRecover | incompatExtents | incompat64bit | incompatMMP |
		incompatFlexBG | incompatEAInode | incompatCsumSeed | incompatLargedir | incompatInlineData | incompatCasefold
	maxSymlink   = 4096
	maxXattrSize = 64 << 10
)

// Open reads the superblock and group descriptors of an image of the given
// size.
func Open(r io.ReaderAt, size int64) (*FS, error) {
	f := &FS{r: r, size: size}
	b := make([]byte, superblockSize)
	if _, err := r.ReadAt(b, superblockOffset); err != nil {
		return nil, fmt.Errorf("ext4: reading superblock: %w", err)
	}
	if _, err := binaryDecode(b, &f.sb); err != nil {
		return nil, err
	}
	sb := &f.sb
	if sb.Magic != superMagic {
		return nil, errors.New("ext4: not an ext2/3/4 image (bad superblock magic)")
	}
	if sb.LogBlockSize > 6 {
		return nil, fmt.Errorf("ext4: block size 2^%d KiB not supported", sb.LogBlockSize)
	}
	f.bs = 1024 << sb.LogBlockSize
	if un := sb.FeatureIncompat &^ incompatSupported; un != 0 {
		return nil, fmt.Errorf("ext4: unsupported incompatible features %#x", un)
	}
	if sb.FeatureRoCompat&roCompatBigalloc != 0 && sb.LogClusterSize != sb.LogBlockSize {
		return nil, errors.New("ext4: bigalloc not supported")
	}
	f.inodeSize = 128
	if sb.RevLevel >= 1 {
		f.inodeSize = int(sb.InodeSize)
	}
	if f.inodeSize < 128 || f.inodeSize > int(f.bs) || f.inodeSize&(f.inodeSize-1) != 0 {
		return nil, fmt.Errorf("ext4: bad inode size %d", f.inodeSize)
	}
	f.descSize = 32
	if sb.FeatureIncompat&incompat64bit != 0 {
		f.descSize = int(sb.DescSize)
		if f.descSize < 32 || f.descSize > 1024 || f.descSize&(f.descSize-1) != 0 {
			return nil, fmt.Errorf("ext4: bad group descriptor size %d", f.descSize)
		}
	}
	if sb.BlocksPerGroup == 0 || sb.BlocksPerGroup > uint32(8*f.bs) || sb.InodesPerGroup == 0 || sb.InodesPerGroup > uint32(8*f.bs) {
		return nil, errors.New("ext4: bad blocks or inodes per group")
	}
	f.ipg = sb.InodesPerGroup
	blocks := sb.blocksCount()
	if blocks <= uint64(sb.FirstDataBlock) {
		return nil, errors.New("ext4: bad block count")
	}
	f.groups = (blocks - uint64(sb.FirstDataBlock) + uint64(sb.BlocksPerGroup) - 1) / uint64(sb.BlocksPerGroup)
	if f.groups*uint64(f.descSize) > uint64(size) || uint64(sb.InodesCount) > f.groups*uint64(f.ipg) {
		return nil, errors.New("ext4: group count does not fit the image")
	}
	// The descriptor table follows the superblock's block.
	gdtStart := int64(sb.FirstDataBlock+1) * f.bs
	if sb.FeatureIncompat&incompatMetaBG != 0 {
		return nil, errors.New("ext4: meta_bg not supported")
	}
	gdt := make([]byte, f.groups*uint64(f.descSize))
	if _, err := r.ReadAt(gdt, gdtStart); err != nil {
		return nil, fmt.Errorf("ext4: reading group descriptors: %w", err)
	}
	f.itables = make([]uint64, f.groups)
	for g := range f.itables {
		d := gdt[g*f.descSize:]
		t := uint64(le.Uint32(d[8:]))
		if f.descSize >= 64 {
			t |= uint64(le.Uint32(d[0x28:])) << 32
		}
		f.itables[g] = t
	}
	return f, nil
}

// BlockSize is the filesystem block size in bytes.
func (f *FS) BlockSize() int { return int(f.bs) }

// Label is the volume label.
func (f *FS) Label() string { return strings.TrimRight(string(f.sb.VolumeName[:]), "\x00") }

// UUID is the filesystem UUID.
func (f *FS) UUID() [16]byte { return f.sb.UUID }

func (f *FS) readAt(p []byte, off int64) error {
	if off < 0 || off+int64(len(p)) > f.size {
		return fmt.Errorf("ext4: read of %d bytes at %d is outside the %d-byte image", len(p), off, f.size)
	}
	if _, err := f.r.ReadAt(p, off); err != nil && !(err == io.EOF && len(p) == 0) {
		return fmt.Errorf("ext4: reading at %d: %w", off, err)
	}
	return nil
}

func (f *FS) readBlock(blk uint64) ([]byte, error) {
	if blk == 0 || blk >= uint64(f.size/f.bs) {
		return nil, fmt.Errorf("ext4: block %d out of range", blk)
	}
	b := make([]byte, f.bs)
	return b, f.readAt(b, int64(blk)*f.bs)
}

// inode reads inode number ino.
func (f *FS) inode(ino uint32) (*Inode, error) {
	if ino == 0 || ino > f.sb.InodesCount {
		return nil, fmt.Errorf("ext4: inode %d out of range", ino)
	}
	g, i := uint64(ino-1)/uint64(f.ipg), uint64(ino-1)%uint64(f.ipg)
	raw := make([]byte, max(f.inodeSize, inodeSize))
	off := int64(f.itables[g])*f.bs + int64(i)*int64(f.inodeSize)
	if f.itables[g] == 0 || f.itables[g] > uint64(f.size/f.bs) {
		return nil, fmt.Errorf("ext4: inode %d: bad inode table", ino)
	}
	if err := f.readAt(raw[:f.inodeSize], off); err != nil {
		return nil, fmt.Errorf("ext4: inode %d: %w", ino, err)
	}
	n := &Inode{Ino: ino, raw: raw}
	mode := le.Uint16(raw[iMode:])
	n.Mode = uint32(mode & 0o7777)
	var ok bool
	if n.Type, ok = typeOfIfmt(mode & sIFMT); !ok {
		return nil, fmt.Errorf("ext4: inode %d: unknown file type %#o", ino, mode&sIFMT)
	}
	n.UID = uint32(le.Uint16(raw[iUID:])) | uint32(le.Uint16(raw[iUIDHi:]))<<16
	n.GID = uint32(le.Uint16(raw[iGID:])) | uint32(le.Uint16(raw[iGIDHi:]))<<16
	n.Size = int64(uint64(le.Uint32(raw[iSizeLo:])) | uint64(le.Uint32(raw[iSizeHigh:]))<<32)
	if n.Size < 0 || n.Size > maxFileBlks*f.bs {
		return nil, fmt.Errorf("ext4: inode %d: size %d out of range", ino, n.Size)
	}
	n.Links = uint32(le.Uint16(raw[iLinks:]))
	n.Flags = le.Uint32(raw[iFlags:])
	n.blocks = uint64(le.Uint32(raw[iBlocksLo:])) | uint64(le.Uint16(raw[iBlocksHi:]))<<32
	extra := 0
	if f.inodeSize > 128 {
		extra = int(le.Uint16(raw[iExtraIsize:]))
		if 128+extra > f.inodeSize {
			extra = 0
		}
	}
	tm := func(off, xoff int) fstree.Timestamp {
		lo := le.Uint32(raw[off:])
		var x uint32
		if 128+extra >= xoff+4 {
			x = le.Uint32(raw[xoff:])
		}
		s, ns := decodeTime(lo, x)
		return fstree.Timestamp{Sec: s, Nsec: ns % 1e9}
	}
	n.Atime, n.Mtime, n.Ctime = tm(iAtime, iAtimeExtra), tm(iMtime, iMtimeExtra), tm(iCtime, iCtimeExtra)
	if n.Type == fstree.TypeCharDev || n.Type == fstree.TypeBlockDev {
		if old := le.Uint32(raw[iBlock:]); old != 0 {
			n.Major, n.Minor = (old>>8)&0xff, old&0xff
		} else {
			nd := le.Uint32(raw[iBlock+4:])
			n.Major, n.Minor = (nd&0xfff00)>>8, (nd&0xff)|((nd>>12)&0xfff00)
		}
	}
	return n, nil
}

// extents maps an inode's data: its extent tree, its block map, or nothing
// for inline data. Unwritten extents are left out (they read as zeros).
func (f *FS) extents(n *Inode) ([]extent, error) {
	if n.Flags&flagInlineDat != 0 {
		return nil, nil
	}
	var out []extent
	limit := uint64(n.Size+f.bs-1) / uint64(f.bs) // blocks the size covers
	if n.Flags&flagExtents != 0 {
		seen := map[uint64]bool{}
		if err := f.walkExtents(n.raw[iBlock:iBlock+60], -1, seen, &out, limit); err != nil {
			return nil, fmt.Errorf("ext4: inode %d: %w", n.Ino, err)
		}
		return out, nil
	}
	// Old-style block map: 12 direct pointers, then single, double and
	// triple indirect blocks.
	c := &content{}
	lblk := uint64(0)
	var visit func(blk uint64, level int) error
	per := uint64(f.bs / 4)
	visited := 0
	visit = func(blk uint64, level int) error {
		if lblk >= limit {
			return nil
		}
		if blk == 0 { // a hole covering this pointer's span
			span := uint64(1)
			for i := 0; i < level; i++ {
				span *= per
			}
			lblk += span
			return nil
		}
		if level == 0 {
			if blk >= uint64(f.size/f.bs) {
				return fmt.Errorf("ext4: inode %d: block %d out of range", n.Ino, blk)
			}
			c.appendRun(lblk, run{blk, 1})
			lblk++
			return nil
		}
		if visited++; uint64(visited) > min(limit+3, uint64(f.size/f.bs)) {
			return fmt.Errorf("ext4: inode %d: block map larger than the file", n.Ino)
		}
		b, err := f.readBlock(blk)
		if err != nil {
			return fmt.Errorf("ext4: inode %d: %w", n.Ino, err)
		}
		for i := uint64(0); i < per && lblk < limit; i++ {
			if err := visit(uint64(le.Uint32(b[4*i:])), level-1); err != nil {
				return err
			}
		}
		return nil
	}
	for i := 0; i < 15 && lblk < limit; i++ {
		level := 0
		if i >= 12 {
			level = i - 11
		}
		if err := visit(uint64(le.Uint32(n.raw[iBlock+4*i:])), level); err != nil {
			return nil, err
		}
	}
	return c.extents(), nil
}

// walkExtents collects the leaves of an extent tree node. Each node block is
// visited once (seen) and depth must strictly decrease, so loops end.
func (f *FS) walkExtents(b []byte, wantDepth int, seen map[uint64]bool, out *[]extent, limit uint64) error {
	if len(b) < extentHdrSize || le.Uint16(b) != extentMagic {
		return errors.New("bad extent header")
	}
	entries, maxE, depth := int(le.Uint16(b[2:])), int(le.Uint16(b[4:])), int(le.Uint16(b[6:]))
	if entries > maxE || extentHdrSize+maxE*extentEntrySize > len(b) || depth > maxExtentDepth || (wantDepth >= 0 && depth != wantDepth) {
		return errors.New("bad extent header")
	}
	for i := 0; i < entries; i++ {
		e := b[extentHdrSize+i*extentEntrySize:]
		if depth == 0 {
			l := uint32(le.Uint16(e[4:]))
			unwritten := l > maxExtentLen
			if unwritten {
				l -= maxExtentLen
			}
			x := extent{logical: le.Uint32(e), len: l, phys: uint64(le.Uint16(e[6:]))<<32 | uint64(le.Uint32(e[8:]))}
			if x.phys+uint64(x.len) > uint64(f.size/f.bs) {
				return fmt.Errorf("extent at block %d out of range", x.phys)
			}
			if k := len(*out); k > 0 && uint64((*out)[k-1].logical)+uint64((*out)[k-1].len) > uint64(x.logical) {
				return errors.New("extents out of order")
			}
			if !unwritten && l > 0 && uint64(x.logical) < limit {
				*out = append(*out, x)
			}
			continue
		}
		child := uint64(le.Uint32(e[4:])) | uint64(le.Uint16(e[8:]))<<32
		if seen[child] {
			return fmt.Errorf("extent tree loop at block %d", child)
		}
		seen[child] = true
		cb, err := f.readBlock(child)
		if err != nil {
			return err
		}
		if err := f.walkExtents(cb, depth-1, seen, out, limit); err != nil {
			return err
		}
	}
	return nil
}

// inlineData returns an inline_data inode's bytes: i_block, then the
// system.data xattr.
func (f *FS) inlineData(n *Inode) ([]byte, error) {
	data := append([]byte(nil), n.raw[iBlock:iBlock+60]...)
	xs, err := f.rawXattrs(n)
	if err != nil {
		return nil, err
	}
	for _, x := range xs {
		if x.index == 7 && x.name == "data" {
			data = append(data, x.value...)
		}
	}
	if int64(len(data)) > n.Size && n.Type != fstree.TypeDir {
		data = data[:n.Size]
	}
	return data, nil
}

// reader returns the inode's data as a ReaderAt of n.Size bytes.
func (f *FS) reader(n *Inode) (*io.SectionReader, error) {
	if n.Flags&flagInlineDat != 0 {
		d, err := f.inlineData(n)
		if err != nil {
			return nil, err
		}
		return io.NewSectionReader(strings.NewReader(string(d)), 0, int64(len(d))), nil
	}
	ext, err := f.extents(n)
	if err != nil {
		return nil, err
	}
	return io.NewSectionReader(&extentReader{r: f.r, ext: ext, size: n.Size, bs: f.bs}, 0, n.Size), nil
}

// readDir lists a directory inode. Every block is scanned linearly: htree
// index blocks look like empty entries, so no hashing is needed.
func (f *FS) readDir(n *Inode) ([]DirEntry, error) {
	if n.Type != fstree.TypeDir {
		return nil, fmt.Errorf("ext4: inode %d: %w", n.Ino, fstree.ErrNotDir)
	}
	if n.Size > f.size {
		return nil, fmt.Errorf("ext4: directory inode %d larger than the image", n.Ino)
	}
	var out []DirEntry
	if n.Flags&flagInlineDat != 0 {
		d, err := f.inlineData(n)
		if err != nil {
			return nil, err
		}
		if len(d) < 4 {
			return nil, fmt.Errorf("ext4: inode %d: short inline directory", n.Ino)
		}
		// 4 bytes of parent inode, then entries in the rest of i_block,
		// then entries in system.data
		if err := f.parseDirBlock(d[4:60], &out); err != nil {
			return nil, fmt.Errorf("ext4: inode %d: %w", n.Ino, err)
		}
		if len(d) > 60 {
			if err := f.parseDirBlock(d[60:], &out); err != nil {
				return nil, fmt.Errorf("ext4: inode %d: %w", n.Ino, err)
			}
		}
		return out, nil
	}
	r, err := f.reader(n)
	if err != nil {
		return nil, err
	}
	b := make([]byte, f.bs)
	for off := int64(0); off+f.bs <= n.Size; off += f.bs {
		if _, err := r.ReadAt(b, off); err != nil {
			return nil, fmt.Errorf("ext4: directory inode %d: %w", n.Ino, err)
		}
		if err := f.parseDirBlock(b, &out); err != nil {
			return nil, fmt.Errorf("ext4: directory inode %d block %d: %w", n.Ino, off/f.bs, err)
		}
	}
	return out, nil
}

func (f *FS) parseDirBlock(b []byte, out *[]DirEntry) error {
	filetype := f.sb.FeatureIncompat&incompatFiletype != 0
	for off := 0; off+8 <= len(b); {
		ino := le.Uint32(b[off:])
		rec := int(le.Uint16(b[off+4:]))
		if f.bs >= 65536 { // ext4_rec_len_from_disk
			if rec == 65535 || rec == 0 {
				rec = 65536
			} else {
				rec = rec&65532 | (rec&3)<<16
			}
		}
		nameLen := int(b[off+6])
		ft := b[off+7]
		if !filetype {
			nameLen |= int(ft) << 8
			ft = 0
		}
		if rec < 8 || rec%4 != 0 || off+rec > len(b) || 8+nameLen > rec {
			return errors.New("corrupt directory entry")
		}
		if ino != 0 && nameLen > 0 {
			name := string(b[off+8 : off+8+nameLen])
			if name != "." && name != ".." {
				if ino > f.sb.InodesCount {
					return fmt.Errorf("entry %q: inode %d out of range", name, ino)
				}
				*out = append(*out, DirEntry{Name: name, Ino: ino, Type: ftToType(ft)})
			}
		}
		off += rec
	}
	return nil
}

// readlink returns a symlink inode's target.
func (f *FS) readlink(n *Inode) (string, error) {
	if n.Type != fstree.TypeSymlink {
		return "", fmt.Errorf("ext4: inode %d is not a symlink", n.Ino)
	}
	if n.Size > maxSymlink {
		return "", fmt.Errorf("ext4: inode %d: symlink of %d bytes", n.Ino, n.Size)
	}
	fast := n.Size < 60 && n.Flags&(flagInlineDat) == 0 &&
		(n.Flags&flagExtents == 0 || le.Uint16(n.raw[iBlock:]) != extentMagic)
	if fast {
		return string(n.raw[iBlock : iBlock+n.Size]), nil
	}
	r, err := f.reader(n)
	if err != nil {
		return "", err
	}
	b := make([]byte, n.Size)
	if _, err := r.ReadAt(b, 0); err != nil && err != io.EOF {
		return "", fmt.Errorf("ext4: symlink inode %d: %w", n.Ino, err)
	}
	return string(b), nil
}

// dirs is the image as confine.Resolve walks it: a lookup scans the
// directory's blocks. The image is read-only.
type dirs struct{ f *FS }

func (d dirs) Child(dir *Inode, name string) (*Inode, confine.Kind, error) {
	ents, err := d.f.readDir(dir)
	if err != nil {
		return nil, confine.Missing, err
	}
	for _, e := range ents {
		if e.Name == name {
			n, err := d.f.inode(e.Ino)
			if err != nil {
				return nil, confine.Missing, err
			}
			return n, n.Type.Kind(), nil
		}
	}
	return nil, confine.Missing, nil
}

func (d dirs) Target(n *Inode) (string, error) { return d.f.readlink(n) }

func (d dirs) Mkdir(dir *Inode, name, p string) (*Inode, error) {
	return nil, fmt.Errorf("ext4: %s: the reader does not write", p)
}

func (d dirs) Describe(n *Inode) string { return n.Type.String() }

// resolve walks a path from the root by confine's rules: symlinks in the
// middle are followed inside the image (absolute targets start at the
// image root, ".." stops there, targets walked as the kernel walks them);
// the last component is followed only when follow is set.
func (f *FS) resolve(p string, follow bool) (*Inode, error) {
	root, err := f.inode(rootIno)
	if err != nil {
		return nil, err
	}
	r, err := confine.Resolve(dirs{f}, root, p, confine.Options{FollowLast: follow})
	if err != nil {
		return nil, fmt.Errorf("ext4: %s: %w", p, err)
	}
	if r.Kind == confine.Missing {
		return nil, fmt.Errorf("ext4: %s: %w", p, ErrNotExist)
	}
	return r.Node, nil
}

// Lookup returns the inode at path without following a final symlink.
func (f *FS) Lookup(p string) (*Inode, error) { return f.resolve(p, false) }

// ReadDir lists a directory (following symlinks), sorted by name.
func (f *FS) ReadDir(p string) ([]DirEntry, error) {
	n, err := f.resolve(p, true)
	if err != nil {
		return nil, err
	}
	ents, err := f.readDir(n)
	if err != nil {
		return nil, err
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name < ents[j].Name })
	return ents, nil
}

// Readlink returns the target of the symlink at path.
func (f *FS) Readlink(p string) (string, error) {
	n, err := f.resolve(p, false)
	if err != nil {
		return "", err
	}
	return f.readlink(n)
}

// Open returns the data of the regular file at path (symlinks followed);
// holes read as zeros.
func (f *FS) Open(p string) (*io.SectionReader, error) {
	n, err := f.resolve(p, true)
	if err != nil {
		return nil, err
	}
	if n.Type != fstree.TypeRegular {
		return nil, fmt.Errorf("ext4: %s is a %v, not a regular file", p, n.Type)
	}
	return f.reader(n)
}

// Xattrs returns the extended attributes of the inode at path (final
// symlink not followed), sorted by name, POSIX ACLs in xattr API form.
func (f *FS) Xattrs(p string) ([]fstree.Xattr, error) {
	n, err := f.resolve(p, false)
	if err != nil {
		return nil, err
	}
	return f.xattrs(n)
}

func (f *FS) xattrs(n *Inode) ([]fstree.Xattr, error) {
	raw, err := f.rawXattrs(n)
	if err != nil {
		return nil, err
	}
	var out []fstree.Xattr
	for _, x := range raw {
		prefix, ok := xattrPrefix(x.index)
		if !ok || x.index == 7 && x.name == "data" && n.Flags&flagInlineDat != 0 {
			continue // unknown namespaces and inline data are not attributes
		}
		v := x.value
		if x.index == 2 || x.index == 3 {
			if v, err = aclFromDisk(v); err != nil {
				return nil, fmt.Errorf("ext4: inode %d: %s: %w", n.Ino, prefix, err)
			}
		}
		name := prefix + x.name
		if prefix == "system.posix_acl_access" || prefix == "system.posix_acl_default" || prefix == "system.richacl" {
			name = prefix
		}
		out = append(out, fstree.Xattr{Name: name, Value: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// rawXattrs reads the in-inode and block attributes.
func (f *FS) rawXattrs(n *Inode) ([]diskXattr, error) {
	var out []diskXattr
	extra := int(le.Uint16(n.raw[iExtraIsize:]))
	if f.inodeSize > 128 && 128+extra+4 <= f.inodeSize && le.Uint32(n.raw[128+extra:]) == xattrMagic {
		area := n.raw[128+extra+4 : f.inodeSize]
		if err := f.parseXattrs(area, area, &out); err != nil {
			return nil, fmt.Errorf("ext4: inode %d xattrs: %w", n.Ino, err)
		}
	}
	blk := uint64(le.Uint32(n.raw[iFileACLLo:]))
	if f.sb.FeatureIncompat&incompat64bit != 0 {
		blk |= uint64(le.Uint16(n.raw[iFileACLHi:])) << 32
	}
	if blk != 0 {
		b, err := f.readBlock(blk)
		if err != nil {
			return nil, fmt.Errorf("ext4: inode %d xattr block: %w", n.Ino, err)
		}
		if le.Uint32(b) != xattrMagic {
			return nil, fmt.Errorf("ext4: inode %d: bad xattr block magic", n.Ino)
		}
		if err := f.parseXattrs(b[xattrBlockHdr:], b, &out); err != nil {
			return nil, fmt.Errorf("ext4: inode %d xattr block: %w", n.Ino, err)
		}
	}
	return out, nil
}

// parseXattrs reads entries from ents until the 4-byte zero end marker;
// value offsets are relative to base.
func (f *FS) parseXattrs(ents, base []byte, out *[]diskXattr) error {
	for off := 0; off+4 <= len(ents) && le.Uint32(ents[off:]) != 0; {
		if off+xattrEntryHdr > len(ents) {
			return errors.New("truncated entry")
		}
		e := ents[off:]
		nameLen, index := int(e[0]), e[1]
		voff, vinum, vsize := int(le.Uint16(e[2:])), le.Uint32(e[4:]), le.Uint32(e[8:])
		if off+xattrEntryHdr+nameLen > len(ents) {
			return errors.New("truncated name")
		}
		x := diskXattr{index: index, name: string(e[xattrEntryHdr : xattrEntryHdr+nameLen])}
		switch {
		case vinum != 0:
			if vsize > maxXattrSize {
				return errors.New("xattr value too large")
			}
			vn, err := f.inode(vinum)
			if err != nil {
				return err
			}
			r, err := f.reader(vn)
			if err != nil {
				return err
			}
			x.value = make([]byte, vsize)
			if _, err := r.ReadAt(x.value, 0); err != nil && err != io.EOF {
				return err
			}
		case vsize > 0:
			if voff+int(vsize) > len(base) {
				return errors.New("value outside its area")
			}
			x.value = append([]byte(nil), base[voff:voff+int(vsize)]...)
		}
		*out = append(*out, x)
		off += xattrEntryHdr + pad4(nameLen)
	}
	return nil
}

// Walk visits path and everything below it depth-first, children in name
// order. fn gets the slash path relative to the image root. A directory
// reached twice (a loop) is an error.
func (f *FS) Walk(p string, fn func(p string, n *Inode) error) error {
	start, err := f.resolve(p, true)
	if err != nil {
		return err
	}
	seen := map[uint32]bool{}
	// Directories of a sound image never share blocks, so all of them
	// together are smaller than the image; more means a directory bomb.
	budget := f.size
	var walk func(p string, n *Inode) error
	walk = func(p string, n *Inode) error {
		if err := fn(p, n); err != nil {
			if err == fstree.SkipDir {
				return nil
			}
			return err
		}
		if n.Type != fstree.TypeDir {
			return nil
		}
		if seen[n.Ino] {
			return fmt.Errorf("ext4: %s: directory loop at inode %d", p, n.Ino)
		}
		seen[n.Ino] = true
		if budget -= max(n.Size, 1); budget < 0 {
			return fmt.Errorf("ext4: %s: directories add up to more than the image size", p)
		}
		ents, err := f.readDir(n)
		if err != nil {
			return err
		}
		sort.Slice(ents, func(i, j int) bool { return ents[i].Name < ents[j].Name })
		for _, e := range ents {
			c, err := f.inode(e.Ino)
			if err != nil {
				return fmt.Errorf("ext4: %s: %w", path.Join(p, e.Name), err)
			}
			if err := walk(strings.TrimPrefix(p+"/"+e.Name, "/"), c); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(strings.Trim(path.Clean("/"+p), "/"), start)
}

// Extract copies the subtree at path into an fstree (the returned inode is
// its top, detached: no entry names it yet), with file data Put into store.
// Hardlinks within the subtree become one shared *fstree.Inode.
func (f *FS) Extract(ctx context.Context, p string, store fstree.Store) (*fstree.Inode, error) {
	inodes := map[uint32]*fstree.Inode{}
	// Files of a sound image never share blocks: mapped data beyond the
	// image size means blocks are reused to amplify the copy.
	budget := f.size
	var top *fstree.Inode
	parents := map[string]*fstree.Inode{}
	err := f.Walk(p, func(wp string, n *Inode) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		t, ok := inodes[n.Ino]
		if !ok || n.Type == fstree.TypeDir {
			var err error
			if t, err = f.toTree(ctx, wp, n, store, &budget); err != nil {
				return err
			}
			if n.Type != fstree.TypeDir {
				inodes[n.Ino] = t
			}
		}
		if top == nil {
			top = t // detached: the caller links it where it wants it
		} else {
			dir, name := path.Split(wp)
			parent := parents[strings.TrimSuffix(dir, "/")]
			if parent == nil {
				return fmt.Errorf("ext4: %s: parent not extracted", wp)
			}
			fstree.Link(parent, name, t, nil)
		}
		if t.Type == fstree.TypeDir {
			parents[wp] = t
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return top, nil
}

func (f *FS) toTree(ctx context.Context, p string, n *Inode, store fstree.Store, budget *int64) (*fstree.Inode, error) {
	t := &fstree.Inode{Type: n.Type, Mode: n.Mode, UID: n.UID, GID: n.GID, Mtime: n.Mtime, Atime: n.Atime, Ctime: n.Ctime,
		Major: n.Major, Minor: n.Minor}
	xs, err := f.xattrs(n)
	if err != nil {
		return nil, fmt.Errorf("ext4: %s: %w", p, err)
	}
	t.Xattrs = xs
	switch n.Type {
	case fstree.TypeSymlink:
		if t.Target, err = f.readlink(n); err != nil {
			return nil, fmt.Errorf("ext4: %s: %w", p, err)
		}
	case fstree.TypeRegular:
		if n.Size > 0 {
			ext, err := f.extents(n)
			if err != nil {
				return nil, fmt.Errorf("ext4: %s: %w", p, err)
			}
			for _, e := range ext {
				*budget -= int64(e.len) * f.bs
			}
			if *budget < 0 {
				return nil, fmt.Errorf("ext4: %s: file data adds up to more than the image size", p)
			}
			r, err := f.reader(n)
			if err != nil {
				return nil, fmt.Errorf("ext4: %s: %w", p, err)
			}
			if t.Content, err = store.Put(ctx, r, n.Size); err != nil {
				return nil, fmt.Errorf("ext4: %s: storing data: %w", p, err)
			}
		}
	}
	return t, nil
}
