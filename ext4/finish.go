package ext4

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"sort"

	"github.com/docker2vm/docker2vm/fstree"
)

// node is one inode as Finish lays it out. Finish keeps one per inode,
// by value: 32 bytes for the common case, a file whose extents fit in its
// inode (or a fast symlink, a device node...), whose i_block, size and
// block count encodeInode works out from the tree when it writes the
// inode. Inodes whose layout wrote blocks or needs more (directories,
// slow symlinks, files with an extent tree, xattrs, the journal) keep it
// in x.
type node struct {
	in     *fstree.Inode // nil for a reserved inode number
	data   *content      // regular files
	x      *layoutInfo
	parent uint32 // directories: the parent's inode number
	links  uint32
}

// layoutInfo is what layoutOne worked out for an inode that has more than
// the tree says.
type layoutInfo struct {
	iblock [60]byte
	flags  uint32
	size   uint64
	blocks uint64   // image blocks charged to the inode (data, tree, xattr block)
	xblock int      // index into finisher.xblocks, -1 for none
	ibody  []byte   // in-inode xattr area, nil for none
	kids   []uint32 // directories, until laid out: their entries' inode numbers
}

// info returns n's layout: its own, or the one encodeInode works out for
// an inode without one.
func (f *finisher) info(n *node) (layoutInfo, error) {
	if n.x != nil {
		return *n.x, nil
	}
	li := layoutInfo{xblock: -1}
	switch n.in.Type {
	case fstree.TypeRegular:
		var ext []extent
		if n.data != nil {
			ext = n.data.extents()
			li.size = uint64(n.data.size)
		}
		ib, tree, err := f.w.extentTree(0, 0, ext) // fits in the inode: writes nothing
		if err != nil || tree != 0 {
			return li, fmt.Errorf("internal error: extent tree of %d extents not laid out", len(ext))
		}
		li.iblock = ib
		li.flags = flagExtents
		for _, e := range ext {
			li.blocks += uint64(e.len)
		}
	case fstree.TypeSymlink:
		li.size = uint64(len(n.in.Target))
		copy(li.iblock[:], n.in.Target)
	case fstree.TypeCharDev, fstree.TypeBlockDev:
		ma, mi := n.in.Major, n.in.Minor
		if ma < 256 && mi < 256 {
			le.PutUint32(li.iblock[0:], ma<<8|mi)
		} else {
			le.PutUint32(li.iblock[4:], mi&0xff|ma<<8|(mi&^0xff)<<12)
		}
	}
	return li, nil
}

// pathOf names inode ino for a message: its path in the tree (found by a
// walk: only errors need it).
func (f *finisher) pathOf(ino uint32) string {
	if ino == journalIno {
		return "<journal>"
	}
	if ino == rootIno {
		return "/"
	}
	want := f.nodes[ino].in
	found := ""
	var visit func(dir *fstree.Inode, p string) bool
	visit = func(dir *fstree.Inode, p string) bool {
		for _, e := range f.entries(dir) {
			cp := e.name
			if p != "" {
				cp = p + "/" + e.name
			}
			if e.in == want {
				found = cp
				return true
			}
			if e.in.Type == fstree.TypeDir && visit(e.in, cp) {
				return true
			}
		}
		return false
	}
	visit(f.root, "")
	if found == "" {
		return fmt.Sprintf("inode %d", ino)
	}
	return found
}

// xblock is one xattr block, shared by every inode with the same set.
type xblock struct {
	data []byte
	refs uint32
	blk  uint64
}

// finisher holds the state of one Finish call.
type finisher struct {
	w        *Writer
	nodes    []node // by inode number; reserved numbers have no inode
	uuid     [16]byte
	hashSeed [4]uint32
	csumSeed uint32
	xblocks  []*xblock
	xindex   map[string]int
	// root is the tree's root; lostFound the lost+found Finish adds to it
	// when the tree has none (the tree itself is left as it is).
	root      *fstree.Inode
	lostFound *fstree.Inode

	groups     uint64
	blocks     uint64 // blocks_count
	ipg        uint32
	gdt        uint64
	blockBmp   []uint64
	inodeBmp   []uint64
	inodeTable []uint64
}

// Finish writes all metadata for tree t, whose regular files hold content
// returned by Put (or readable through Options.Source), and sizes the file.
// The file is then a complete ext4 image. The tree is not modified.
func (w *Writer) Finish(ctx context.Context, t *fstree.Tree) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	defer w.wbDone.Wait()
	if w.finished {
		return errors.New("ext4: Finish called twice")
	}
	if t == nil || t.Root == nil || t.Root.Type != fstree.TypeDir {
		return errors.New("ext4: tree has no root directory")
	}
	fin := &finisher{w: w, xindex: map[string]int{}}
	if err := fin.number(ctx, t); err != nil {
		return err
	}
	w.finished = true
	steps := []func(context.Context) error{fin.layout, fin.writeXattrBlocks, fin.makeJournal, fin.plan, fin.writeInodes, fin.writeGroups}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return err
		}
	}
	if err := w.flush(); err != nil {
		return fmt.Errorf("ext4: writing image: %w", err)
	}
	size := int64(fin.blocks) * blockSize
	if w.opts.Size > 0 {
		size = w.opts.Size
	}
	if err := w.f.Truncate(size); err != nil {
		return fmt.Errorf("ext4: setting image size: %w", err)
	}
	return nil
}

// number gives every inode its number (root 2, lost+found 11, the rest from
// 12 in walk order), counts links, takes in foreign content and hashes the
// tree for the derived UUID.
//
// Long: one walk of the tree numbers the inodes, counts links, takes in
// foreign content and hashes the tree, so that a tree of a million entries
// is walked once.
func (f *finisher) number(ctx context.Context, t *fstree.Tree) error {
	w := f.w
	sde := fstree.Timestamp{Sec: w.opts.SourceDateEpoch}
	root := t.Root
	f.root = root
	// Allocated once: grown by appending, a million nodes would hold the
	// old array and the new one at once, at the peak of the run's memory.
	f.nodes = make([]node, firstIno, firstIno+1+countEntries(root))
	f.nodes[rootIno] = node{in: root, parent: rootIno, links: 2}
	// The numbers of the inodes more than one entry may name: directories
	// (checked to appear once) and files with hardlinks. Every other
	// inode is met once, in its directory, which records it (kids).
	index := map[*fstree.Inode]uint32{root: rootIno}
	lf := root.Child("lost+found")
	if lf == nil {
		lf = fstree.NewDir(0o700, 0, 0)
		lf.Mtime, lf.Atime, lf.Ctime = sde, sde, sde
		f.lostFound = lf
	}
	if lf.Type == fstree.TypeDir {
		f.nodes = append(f.nodes, node{in: lf, parent: rootIno, links: 2})
		index[lf] = firstIno
	}
	h := &inodeHasher{h: sha256.New()}
	fmt.Fprintf(h.h, "ext4 %q %d %d %v\n", w.opts.Label, w.opts.Size, w.opts.SourceDateEpoch, w.opts.NoJournal)
	h.add("", root, 0)

	visitedLF := false // the pre-numbered lost+found may be met once
	var visit func(dirIno uint32, dir *fstree.Inode, p string, depth int) error
	visit = func(dirIno uint32, dir *fstree.Inode, p string, depth int) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		es := f.entries(dir)
		kids := make([]uint32, 0, len(es)) // the entries' inode numbers, for layout
		defer func() { f.nodes[dirIno].x = &layoutInfo{xblock: -1, kids: kids} }()
		for _, e := range es {
			name, c := e.name, e.in
			cp := name
			if p != "" {
				cp = p + "/" + name
			}
			if c == nil {
				return fmt.Errorf("ext4: %s: nil inode in tree", cp)
			}
			var ino uint32
			var seen bool
			if c.Type == fstree.TypeDir || c.Links() != 1 {
				ino, seen = index[c]
			}
			if c.Type == fstree.TypeDir {
				if seen && (ino != firstIno || visitedLF) {
					return fmt.Errorf("ext4: %s: directory appears twice in the tree", cp)
				}
				if ino == firstIno {
					visitedLF = true
				}
				if !seen {
					ino = uint32(len(f.nodes))
					f.nodes = append(f.nodes, node{in: c, links: 2})
					index[c] = ino
				}
				f.nodes[ino].parent = dirIno
				f.nodes[dirIno].links++
				kids = append(kids, ino)
				h.add(cp, c, ino)
				if err := visit(ino, c, cp, depth+1); err != nil {
					return err
				}
				continue
			}
			if !seen {
				ino = uint32(len(f.nodes))
				f.nodes = append(f.nodes, node{in: c})
				if c.Links() != 1 {
					index[c] = ino
				}
				if err := f.takeContent(ctx, &f.nodes[ino], cp); err != nil {
					return err
				}
			}
			kids = append(kids, ino)
			n := &f.nodes[ino]
			n.links++
			if n.links > maxLinks {
				return fmt.Errorf("ext4: %s: more than %d hard links", cp, maxLinks)
			}
			h.add(cp, c, ino)
			if n.data != nil {
				h.h.Write(binary.LittleEndian.AppendUint32(nil, n.data.crc))
			}
		}
		return nil
	}
	if err := visit(rootIno, root, "", 0); err != nil {
		return err
	}
	if uint64(len(f.nodes)) > 1<<32-1 {
		return errors.New("ext4: too many inodes")
	}
	sum := h.h.Sum(nil)
	copy(f.uuid[:], sum)
	f.uuid[6] = f.uuid[6]&0x0f | 0x50 // name-based UUID
	f.uuid[8] = f.uuid[8]&0x3f | 0x80
	if w.opts.UUID != nil {
		f.uuid = *w.opts.UUID
	}
	seed := sha256.Sum256(append([]byte("ext4 htree hash seed "), f.uuid[:]...))
	for i := range f.hashSeed {
		f.hashSeed[i] = le.Uint32(seed[4*i:])
	}
	f.csumSeed = crc32cRaw(^uint32(0), f.uuid[:])
	return nil
}

// countEntries is the number of entries below dir: at least the number of
// inodes there (a file with several names counts once per name).
func countEntries(dir *fstree.Inode) int {
	n := dir.NumChildren()
	for _, c := range dir.Children() {
		if c.IsDir() {
			n += countEntries(c)
		}
	}
	return n
}

// takeContent checks a regular file's content and copies it in when it
// came from another store or is shared with another inode.
func (f *finisher) takeContent(ctx context.Context, n *node, path string) error {
	if n.in.Type != fstree.TypeRegular || n.in.Content == nil {
		return nil
	}
	w := f.w
	c, ok := n.in.Content.(*content)
	if ok && c.w == w {
		if c.released {
			return fmt.Errorf("ext4: %s: content was released but is still in the tree", path)
		}
		if !c.owned {
			c.owned = true
			n.data = c
			return nil
		}
	}
	// shared with another inode (each inode needs its own blocks), from
	// another Writer, or from Options.Source: copy it in
	var ra io.ReaderAt
	var err error
	switch {
	case ok && c.w == w:
		ra, err = w.openLocked(c)
	case ok:
		ra, err = c.w.Open(c)
	case w.opts.Source != nil:
		ra, err = w.opts.Source.Open(n.in.Content)
	default:
		return fmt.Errorf("ext4: %s: content %T was not stored by this writer and Options.Source is not set", path, n.in.Content)
	}
	if err != nil {
		return fmt.Errorf("ext4: %s: opening content: %w", path, err)
	}
	size := n.in.Content.Size()
	nc := &content{w: w, size: size}
	if err := w.fill(ctx, nc, io.NewSectionReader(ra, 0, size)); err != nil {
		return fmt.Errorf("ext4: %s: copying content: %w", path, err)
	}
	n.data = nc
	return nil
}

// entry is one directory entry as Finish writes it.
type entry struct {
	name string
	in   *fstree.Inode
}

// entries lists a directory's entries in byte order of name; the root's
// include the lost+found Finish adds.
func (f *finisher) entries(dir *fstree.Inode) []entry {
	names := fstree.SortedNames(dir)
	out := make([]entry, 0, len(names)+1)
	for _, name := range names {
		out = append(out, entry{name, dir.Child(name)})
	}
	if dir == f.root && f.lostFound != nil {
		i := sort.Search(len(out), func(i int) bool { return out[i].name >= "lost+found" })
		out = slices.Insert(out, i, entry{"lost+found", f.lostFound})
	}
	return out
}

// inodeHasher feeds each inode's metadata to the hash the UUID is derived
// from, in a fixed binary form (length-prefixed strings, little-endian
// numbers) built in a reused buffer: one Write per inode.
type inodeHasher struct {
	h   hash.Hash
	buf []byte
}

func (x *inodeHasher) add(p string, n *fstree.Inode, ino uint32) {
	b := x.buf[:0]
	str := func(s string) {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	u32 := func(v uint32) { b = binary.LittleEndian.AppendUint32(b, v) }
	u64 := func(v uint64) { b = binary.LittleEndian.AppendUint64(b, v) }
	str(p)
	u32(ino)
	u32(uint32(n.Type))
	u32(n.Mode)
	u32(n.UID)
	u32(n.GID)
	for _, t := range []fstree.Timestamp{n.Mtime, n.Atime, n.Ctime} {
		u64(uint64(t.Sec))
		u32(t.Nsec)
	}
	u64(uint64(n.Size()))
	str(n.Target)
	u32(n.Major)
	u32(n.Minor)
	u32(uint32(len(n.Xattrs)))
	for _, xa := range n.Xattrs {
		str(xa.Name)
		str(string(xa.Value))
	}
	x.h.Write(b)
	x.buf = b
}

// layout writes every inode's blocks (directories, extent trees, slow
// symlinks) and works out its i_block, flags, size and xattrs.
func (f *finisher) layout(ctx context.Context) error {
	for ino := uint32(rootIno); ino < uint32(len(f.nodes)); ino++ {
		n := &f.nodes[ino]
		if n.in == nil {
			continue
		}
		if ino%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if err := f.layoutOne(ino, n); err != nil {
			return fmt.Errorf("ext4: inode for %s: %w", f.pathOf(ino), err)
		}
	}
	return nil
}

// Long: one case per kind of inode (regular, symlink, directory, device,
// FIFO, socket) and per way it is stored, as the on-disk format lays each
// out.
func (f *finisher) layoutOne(ino uint32, n *node) error {
	w := f.w
	seed := inodeCsumSeed(f.csumSeed, ino, 0)
	need := func() *layoutInfo {
		if n.x == nil {
			n.x = &layoutInfo{xblock: -1}
		}
		return n.x
	}
	switch n.in.Type {
	case fstree.TypeDir:
		x := need()
		es := f.entries(n.in)
		if len(x.kids) != len(es) {
			return fmt.Errorf("internal error: %d entries numbered, %d listed", len(x.kids), len(es))
		}
		ents := make([]dirent, 0, len(es))
		for i, e := range es {
			ents = append(ents, dirent{name: e.name, ino: x.kids[i], ftype: fileType(e.in.Type)})
		}
		x.kids = nil
		minBlocks := 1
		if ino == firstIno && len(ents) == 0 {
			minBlocks = 4 // mke2fs gives lost+found 16 KiB to reconnect into
		}
		data, indexed, err := dirBlocks(ino, n.parent, ents, minBlocks, seed, f.hashSeed)
		if err != nil {
			return err
		}
		ext, err := w.writeBlocks(data)
		if err != nil {
			return err
		}
		if err := f.setExtents(x, ino, seed, ext); err != nil {
			return err
		}
		x.size = uint64(len(data))
		if indexed {
			x.flags |= flagIndex
		}
		if n.links > maxLinks {
			n.links = 1 // dir_nlink: "many"
		}
	case fstree.TypeRegular:
		if n.data != nil && len(n.data.extents()) > extentsInInode {
			x := need()
			if err := f.setExtents(x, ino, seed, n.data.extents()); err != nil {
				return err
			}
			x.size = uint64(n.data.size)
		}
		// else info works it out
	case fstree.TypeSymlink:
		t := n.in.Target
		switch {
		case len(t) < 60: // in i_block: info
		case len(t) < blockSize:
			x := need()
			x.size = uint64(len(t))
			b := make([]byte, blockSize)
			copy(b, t)
			ext, err := w.writeBlocks(b)
			if err != nil {
				return err
			}
			if err := f.setExtents(x, ino, seed, ext); err != nil {
				return err
			}
		default:
			return fmt.Errorf("symlink target of %d bytes is longer than %d", len(t), blockSize-1)
		}
	case fstree.TypeCharDev, fstree.TypeBlockDev:
		ma, mi := n.in.Major, n.in.Minor
		if (ma >= 256 || mi >= 256) && (ma >= 1<<12 || mi >= 1<<20) {
			return fmt.Errorf("device number %d:%d out of range", ma, mi)
		}
	case fstree.TypeFIFO, fstree.TypeSocket:
	default:
		return fmt.Errorf("unknown inode type %v", n.in.Type)
	}
	if len(n.in.Xattrs) > 0 {
		if n.x == nil {
			li, err := f.info(n)
			if err != nil {
				return err
			}
			n.x = &li
		}
		x := n.x
		xs, err := toDiskXattrs(n.in.Xattrs)
		if err != nil {
			return err
		}
		ibody, block, err := splitXattrs(xs)
		if err != nil {
			return err
		}
		if len(ibody) > 0 {
			x.ibody = encodeIbody(ibody)
		}
		if len(block) > 0 {
			b := encodeXattrBlock(block)
			i, ok := f.xindex[string(b)]
			if !ok {
				i = len(f.xblocks)
				f.xblocks = append(f.xblocks, &xblock{data: b})
				f.xindex[string(b)] = i
			}
			f.xblocks[i].refs++
			x.xblock = i
			x.blocks++
		}
	}
	return nil
}

func (f *finisher) setExtents(x *layoutInfo, ino, seed uint32, ext []extent) error {
	ib, tree, err := f.w.extentTree(ino, seed, ext)
	if err != nil {
		return err
	}
	x.iblock = ib
	x.flags |= flagExtents
	for _, e := range ext {
		x.blocks += uint64(e.len)
	}
	x.blocks += tree
	return nil
}
