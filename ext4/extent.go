package ext4

import (
	"errors"
	"fmt"
)

// Extent tree nodes: a 12-byte header, then 12-byte entries; a node in its
// own block ends with a crc32c tail.
const (
	extentHdrSize   = 12
	extentEntrySize = 12
	extentsInInode  = 4
	extentsPerBlock = (blockSize - extentHdrSize) / extentEntrySize // 340
	maxExtentDepth  = 5
)

// extentHeader is struct ext4_extent_header.
type extentHeader struct {
	Magic      uint16
	Entries    uint16
	Max        uint16
	Depth      uint16
	Generation uint32
}

func (h extentHeader) put(b []byte) {
	le.PutUint16(b[0:], h.Magic)
	le.PutUint16(b[2:], h.Entries)
	le.PutUint16(b[4:], h.Max)
	le.PutUint16(b[6:], h.Depth)
	le.PutUint32(b[8:], h.Generation)
}

// putLeafEntry writes struct ext4_extent.
func putLeafEntry(b []byte, e extent) {
	le.PutUint32(b[0:], e.logical)
	le.PutUint16(b[4:], uint16(e.len))
	le.PutUint16(b[6:], uint16(e.phys>>32))
	le.PutUint32(b[8:], uint32(e.phys))
}

// putIndexEntry writes struct ext4_extent_idx.
func putIndexEntry(b []byte, logical uint32, child uint64) {
	le.PutUint32(b[0:], logical)
	le.PutUint32(b[4:], uint32(child))
	le.PutUint16(b[8:], uint16(child>>32))
	le.PutUint16(b[10:], 0)
}

// extentTree builds the extent tree of inode ino: up to 4 extents live in
// i_block; more get leaf blocks, and index blocks above them until the root
// fits in i_block again. It returns i_block and the number of tree blocks.
func (w *Writer) extentTree(ino uint32, seed uint32, ext []extent) ([60]byte, uint64, error) {
	var iblock [60]byte
	type ref struct {
		logical uint32
		blk     uint64
	}
	var depth uint16
	var treeBlocks uint64
	var refs []ref // entries of the level being built when depth > 0
	if len(ext) > extentsInInode {
		// leaves
		for i := 0; i < len(ext); i += extentsPerBlock {
			chunk := ext[i:min(i+extentsPerBlock, len(ext))]
			b := make([]byte, blockSize)
			extentHeader{extentMagic, uint16(len(chunk)), extentsPerBlock, 0, 0}.put(b)
			for j, e := range chunk {
				putLeafEntry(b[extentHdrSize+j*extentEntrySize:], e)
			}
			blk, err := w.writeMetaBlock(b, seed)
			if err != nil {
				return iblock, 0, err
			}
			refs = append(refs, ref{chunk[0].logical, blk})
			treeBlocks++
		}
		depth = 1
		for len(refs) > extentsInInode {
			var up []ref
			for i := 0; i < len(refs); i += extentsPerBlock {
				chunk := refs[i:min(i+extentsPerBlock, len(refs))]
				b := make([]byte, blockSize)
				extentHeader{extentMagic, uint16(len(chunk)), extentsPerBlock, depth, 0}.put(b)
				for j, r := range chunk {
					putIndexEntry(b[extentHdrSize+j*extentEntrySize:], r.logical, r.blk)
				}
				blk, err := w.writeMetaBlock(b, seed)
				if err != nil {
					return iblock, 0, err
				}
				up = append(up, ref{chunk[0].logical, blk})
				treeBlocks++
			}
			refs = up
			depth++
			if depth > maxExtentDepth {
				return iblock, 0, errors.New("extent tree deeper than 5 levels")
			}
		}
	}
	if depth == 0 {
		extentHeader{extentMagic, uint16(len(ext)), extentsInInode, 0, 0}.put(iblock[:])
		for j, e := range ext {
			putLeafEntry(iblock[extentHdrSize+j*extentEntrySize:], e)
		}
	} else {
		extentHeader{extentMagic, uint16(len(refs)), extentsInInode, depth, 0}.put(iblock[:])
		for j, r := range refs {
			putIndexEntry(iblock[extentHdrSize+j*extentEntrySize:], r.logical, r.blk)
		}
	}
	return iblock, treeBlocks, nil
}

// writeMetaBlock stores one extent tree block with its checksum tail.
func (w *Writer) writeMetaBlock(b []byte, seed uint32) (uint64, error) {
	tail := extentHdrSize + extentsPerBlock*extentEntrySize
	le.PutUint32(b[tail:], crc32cRaw(seed, b[:tail]))
	blk := w.metaAlloc(1).start
	if err := w.writeAt(b, int64(blk)*blockSize); err != nil {
		return 0, fmt.Errorf("writing extent block: %w", err)
	}
	return blk, nil
}

// metaAlloc takes up to n blocks for metadata, recording them for the
// block bitmaps.
func (w *Writer) metaAlloc(n uint64) run {
	r := w.alloc.alloc(n)
	w.metaRuns = append(w.metaRuns, r)
	return r
}

// writeBlocks stores whole blocks of metadata-like file data (directories,
// slow symlinks) and returns their extents.
func (w *Writer) writeBlocks(data []byte) ([]extent, error) {
	c := &content{}
	var lblk uint64
	for len(data) > 0 {
		r := w.metaAlloc(uint64(len(data) / blockSize))
		k := int(r.len) * blockSize
		if err := w.writeAt(data[:k], int64(r.start)*blockSize); err != nil {
			return nil, err
		}
		c.appendRun(lblk, r)
		lblk += r.len
		data = data[k:]
	}
	return c.extents(), nil
}
