package ext4

import (
	"errors"
	"fmt"
	"sort"
)

// Directory blocks: struct ext4_dir_entry_2 records; with metadata_csum each
// leaf block ends in a 12-byte fake entry holding the checksum.
const (
	direntHdr     = 8
	dirTailSize   = 12
	leafSpace     = blockSize - dirTailSize
	dxRootLimit   = (blockSize - 32 - 8) / 8 // after ".", "..", dx_root_info; dx_tail at the end
	dxNodeLimit   = (blockSize - 8 - 8) / 8  // after the fake empty entry
	dxCountOffRot = 32
	dxCountOffNod = 8
)

// dirent is one directory entry to write.
type dirent struct {
	name  string
	ino   uint32
	ftype uint8
	hash  uint32
	minor uint32
}

func recLen(nameLen int) int { return pad4(direntHdr + nameLen) }

func putDirent(b []byte, ino uint32, rec int, name string, ftype uint8) {
	le.PutUint32(b[0:], ino)
	le.PutUint16(b[4:], uint16(rec))
	b[6] = uint8(len(name))
	b[7] = ftype
	copy(b[8:], name)
}

// finishLeaf sets the last entry's rec_len to reach the tail and writes the
// checksum tail of a leaf block.
func finishLeaf(b []byte, lastOff int, seed uint32) {
	if lastOff < 0 {
		putDirent(b, 0, leafSpace, "", 0)
	} else {
		le.PutUint16(b[lastOff+4:], uint16(leafSpace-lastOff))
	}
	t := b[leafSpace:]
	clear(t)
	le.PutUint16(t[4:], dirTailSize)
	t[7] = ftCsum
	le.PutUint32(t[8:], crc32cRaw(seed, b[:leafSpace]))
}

// packLeaves fills leaf blocks with entries in order; the first block may
// start with some bytes already used (by "." and "..").
func packLeaves(ents []dirent, firstUsed int) [][]dirent {
	var leaves [][]dirent
	used := firstUsed
	start := 0
	for i, e := range ents {
		rl := recLen(len(e.name))
		if used+rl > leafSpace {
			leaves = append(leaves, ents[start:i])
			start, used = i, 0
		}
		used += rl
	}
	return append(leaves, ents[start:])
}

// dirBlocks lays out a directory: a single linear block when everything
// fits (padded with empty blocks to minBlocks), an htree otherwise.
func dirBlocks(ino, parent uint32, ents []dirent, minBlocks int, seed uint32, hashSeed [4]uint32) (data []byte, indexed bool, err error) {
	for _, e := range ents {
		if len(e.name) == 0 || len(e.name) > 255 {
			return nil, false, fmt.Errorf("entry name %q: length must be 1 to 255 bytes", e.name)
		}
	}
	dots := recLen(1) + recLen(2)
	size := dots
	for _, e := range ents {
		size += recLen(len(e.name))
	}
	if size <= leafSpace {
		n := max(1, minBlocks)
		data = make([]byte, n*blockSize)
		b := data[:blockSize]
		putDirent(b, ino, recLen(1), ".", ftDir)
		putDirent(b[12:], parent, recLen(2), "..", ftDir)
		off, last := dots, 12
		for _, e := range ents {
			putDirent(b[off:], e.ino, recLen(len(e.name)), e.name, e.ftype)
			last = off
			off += recLen(len(e.name))
		}
		finishLeaf(b, last, seed)
		for i := 1; i < n; i++ {
			finishLeaf(data[i*blockSize:(i+1)*blockSize], -1, seed)
		}
		return data, false, nil
	}
	return htreeBlocks(ino, parent, ents, seed, hashSeed)
}

// htreeBlocks builds a hashed directory: block 0 is the dx root, then index
// nodes (when more than one level is needed), then leaves. Leaves hold
// entries in hash order; a leaf that starts inside a run of equal hashes is
// indexed with the low "continued" bit set, as the kernel does.
//
// Long: the hashed directory's blocks (dx root, index nodes, leaves and
// their continued bits) are laid out in one pass, in the kernel's order.
func htreeBlocks(ino, parent uint32, ents []dirent, seed uint32, hashSeed [4]uint32) ([]byte, bool, error) {
	sorted := make([]dirent, len(ents))
	copy(sorted, ents)
	for i := range sorted {
		sorted[i].hash, sorted[i].minor = dxHash([]byte(sorted[i].name), hashHalfMD4+hashUnsigned, hashSeed)
	}
	sort.Slice(sorted, func(i, j int) bool {
		a, b := sorted[i], sorted[j]
		if a.hash != b.hash {
			return a.hash < b.hash
		}
		if a.minor != b.minor {
			return a.minor < b.minor
		}
		return a.name < b.name
	})
	leaves := packLeaves(sorted, 0)
	var nodes int
	switch {
	case len(leaves) <= dxRootLimit:
	case (len(leaves)+dxNodeLimit-1)/dxNodeLimit <= dxRootLimit:
		nodes = (len(leaves) + dxNodeLimit - 1) / dxNodeLimit
	default:
		return nil, false, errors.New("directory too large for a two-level htree")
	}
	// index hash of each leaf
	lhash := make([]uint32, len(leaves))
	for i, l := range leaves {
		h := l[0].hash
		if i > 0 {
			prev := leaves[i-1]
			if prev[len(prev)-1].hash == h {
				h |= 1
			}
		}
		lhash[i] = h
	}
	nblocks := 1 + nodes + len(leaves)
	data := make([]byte, nblocks*blockSize)
	firstLeaf := 1 + nodes
	for i, l := range leaves {
		b := data[(firstLeaf+i)*blockSize : (firstLeaf+i+1)*blockSize]
		off, last := 0, -1
		for _, e := range l {
			putDirent(b[off:], e.ino, recLen(len(e.name)), e.name, e.ftype)
			last = off
			off += recLen(len(e.name))
		}
		finishLeaf(b, last, seed)
	}
	root := data[:blockSize]
	putDirent(root, ino, 12, ".", ftDir)
	putDirent(root[12:], parent, blockSize-12, "..", ftDir)
	// dx_root_info
	root[24+4] = hashHalfMD4
	root[24+5] = 8
	if nodes > 0 {
		root[24+6] = 1
	}
	if nodes == 0 {
		blks := make([]uint32, len(leaves))
		for i := range leaves {
			blks[i] = uint32(firstLeaf + i)
		}
		putDxEntries(root, dxCountOffRot, dxRootLimit, lhash, blks, seed)
		return data, true, nil
	}
	var rootHash, rootBlk []uint32
	for n := 0; n < nodes; n++ {
		lo, hi := n*dxNodeLimit, min((n+1)*dxNodeLimit, len(leaves))
		b := data[(1+n)*blockSize : (2+n)*blockSize]
		le.PutUint16(b[4:], blockSize) // fake empty entry spanning the block
		blks := make([]uint32, hi-lo)
		for i := range blks {
			blks[i] = uint32(firstLeaf + lo + i)
		}
		putDxEntries(b, dxCountOffNod, dxNodeLimit, lhash[lo:hi], blks, seed)
		rootHash = append(rootHash, lhash[lo])
		rootBlk = append(rootBlk, uint32(1+n))
	}
	putDxEntries(root, dxCountOffRot, dxRootLimit, rootHash, rootBlk, seed)
	return data, true, nil
}

// putDxEntries writes a dx_countlimit, the entries (the first one's hash
// slot holds count/limit) and the dx_tail checksum.
func putDxEntries(b []byte, off, limit int, hashes, blks []uint32, seed uint32) {
	le.PutUint16(b[off:], uint16(limit))
	le.PutUint16(b[off+2:], uint16(len(blks)))
	for i := range blks {
		p := off + 8*i
		if i > 0 {
			le.PutUint32(b[p:], hashes[i])
		}
		le.PutUint32(b[p+4:], blks[i])
	}
	tail := off + limit*8
	c := crc32cRaw(seed, b[:off+len(blks)*8])
	c = crc32cRaw(c, b[tail:tail+4])
	c = crc32cRaw(c, []byte{0, 0, 0, 0})
	le.PutUint32(b[tail+4:], c)
}
