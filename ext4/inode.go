package ext4

import (
	"context"
	"fmt"

	"github.com/docker2vm/docker2vm/fstree"
)

// writeInodes writes the used part of every group's inode table.
func (f *finisher) writeInodes(ctx context.Context) error {
	last := uint64(len(f.nodes) - 1)
	ipg := uint64(f.ipg)
	for g := uint64(0); g < f.groups; g++ {
		first := g*ipg + 1
		if first > last {
			break
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		end := min((g+1)*ipg, last)
		buf := make([]byte, ((end-first+1)*inodeSize+blockSize-1)/blockSize*blockSize)
		for ino := first; ino <= end; ino++ {
			if err := f.encodeInode(buf[(ino-first)*inodeSize:(ino-first+1)*inodeSize], uint32(ino)); err != nil {
				return err
			}
		}
		if _, err := f.w.f.WriteAt(buf, int64(f.inodeTable[g])*blockSize); err != nil {
			return fmt.Errorf("ext4: writing inode table of group %d: %w", g, err)
		}
	}
	return nil
}

func putTime(b []byte, off, extraOff int, t fstree.Timestamp) {
	lo, extra := encodeTime(t.Sec, t.Nsec)
	le.PutUint32(b[off:], lo)
	le.PutUint32(b[extraOff:], extra)
}

// encodeInode fills the 256-byte inode ino.
func (f *finisher) encodeInode(b []byte, ino uint32) error {
	seed := inodeCsumSeed(f.csumSeed, ino, 0)
	le.PutUint16(b[iExtraIsize:], extraIsize)
	n := &f.nodes[ino]
	if n.in == nil { // reserved and unused: zeroed like mke2fs, but checksummed
		setInodeCsum(b, seed)
		return nil
	}
	li, err := f.info(n)
	if err != nil {
		return fmt.Errorf("ext4: inode for %s: %w", f.pathOf(ino), err)
	}
	in := n.in
	le.PutUint16(b[iMode:], uint16(in.Mode&0o7777)|ifmtOf(in.Type))
	le.PutUint16(b[iUID:], uint16(in.UID))
	le.PutUint16(b[iUIDHi:], uint16(in.UID>>16))
	le.PutUint16(b[iGID:], uint16(in.GID))
	le.PutUint16(b[iGIDHi:], uint16(in.GID>>16))
	le.PutUint32(b[iSizeLo:], uint32(li.size))
	le.PutUint32(b[iSizeHigh:], uint32(li.size>>32))
	putTime(b, iAtime, iAtimeExtra, in.Atime)
	putTime(b, iCtime, iCtimeExtra, in.Ctime)
	putTime(b, iMtime, iMtimeExtra, in.Mtime)
	putTime(b, iCrtime, iCrtimeExtra, fstree.Timestamp{Sec: f.w.opts.SourceDateEpoch})
	le.PutUint16(b[iLinks:], uint16(n.links))
	sectors := li.blocks * (blockSize / 512)
	if sectors >= 1<<48 {
		return fmt.Errorf("ext4: inode for %s: too many blocks", f.pathOf(ino))
	}
	le.PutUint32(b[iBlocksLo:], uint32(sectors))
	le.PutUint16(b[iBlocksHi:], uint16(sectors>>32))
	le.PutUint32(b[iFlags:], li.flags)
	copy(b[iBlock:iBlock+60], li.iblock[:])
	if li.xblock >= 0 {
		blk := f.xblocks[li.xblock].blk
		le.PutUint32(b[iFileACLLo:], uint32(blk))
		le.PutUint16(b[iFileACLHi:], uint16(blk>>32))
	}
	if li.ibody != nil {
		copy(b[xattrIbodyOff:], li.ibody)
	}
	setInodeCsum(b, seed)
	return nil
}
