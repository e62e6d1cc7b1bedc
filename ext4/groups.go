package ext4

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"sort"

	"github.com/docker2vm/docker2vm/fstree"
)

func (w *Writer) headroom(used uint64) uint64 {
	if w.opts.Headroom > 0 {
		return (uint64(w.opts.Headroom) + blockSize - 1) / blockSize
	}
	return max(minHeadroom/blockSize, used/4)
}

// plan fixes the geometry (size, groups, inodes per group) and places the
// bitmaps and inode tables after everything else.
func (f *finisher) plan(ctx context.Context) error {
	w := f.w
	ninodes := uint64(len(f.nodes) - 1)
	fixed := w.opts.Size > 0
	total := w.alloc.next + w.headroom(w.alloc.next)
	if fixed {
		total = uint64(w.opts.Size) / blockSize
	}
	for iter := 0; ; iter++ {
		if iter > 100 {
			return errors.New("ext4: filesystem geometry did not converge")
		}
		if !fixed {
			total = (total + 255) &^ 255 // whole MiB
		}
		groups := (total + blocksPerGrp - 1) / blocksPerGrp
		gdt := gdtBlocks(groups)
		if 1+gdt > w.alloc.resv {
			return fmt.Errorf("ext4: image of %d bytes is too large for automatic sizing; set Size", total*blockSize)
		}
		if last := total - (groups-1)*blocksPerGrp; groups > 1 && isBackupGroup(groups-1) && last < 2+gdt {
			// the last group cannot hold its superblock copy
			if fixed {
				total = (groups - 1) * blocksPerGrp
			} else {
				total = (groups-1)*blocksPerGrp + 2 + gdt
			}
			continue
		}
		want := max(ninodes+max(ninodes/4, 1024), total*blockSize/uint64(w.opts.InodeRatio))
		ipg := (want + groups - 1) / groups
		ipg = max(16, (ipg+15)&^15)
		if ipg > 8*blockSize {
			ipg = 8 * blockSize
		}
		if ipg*groups < ninodes {
			if fixed {
				return fmt.Errorf("ext4: tree has %d inodes but --size %d holds at most %d; raise --size or omit it", ninodes, w.opts.Size, ipg*groups)
			}
			total = (ninodes + ipg - 1) / ipg * blocksPerGrp
			continue
		}
		sim := w.alloc
		f.place(&sim, groups, uint32(ipg), false)
		end := sim.next
		if fixed {
			if end > total {
				return w.tooSmall(end)
			}
		} else if want := end + w.headroom(end); want > total {
			total = want
			continue
		}
		f.blocks, f.groups, f.ipg, f.gdt = total, groups, uint32(ipg), gdt
		f.place(&w.alloc, groups, uint32(ipg), true)
		return nil
	}
}

// place allocates the block bitmaps, inode bitmaps and inode tables of all
// groups back to back, as flex_bg allows.
func (f *finisher) place(a *allocator, groups uint64, ipg uint32, record bool) {
	tableBlocks := uint64(ipg) * inodeSize / blockSize
	if record {
		f.blockBmp = make([]uint64, groups)
		f.inodeBmp = make([]uint64, groups)
		f.inodeTable = make([]uint64, groups)
	}
	take := func(n uint64) uint64 {
		r := a.contig(n)
		if record {
			f.w.metaRuns = append(f.w.metaRuns, r)
		}
		return r.start
	}
	for g := range groups {
		b := take(1)
		if record {
			f.blockBmp[g] = b
		}
	}
	for g := range groups {
		b := take(1)
		if record {
			f.inodeBmp[g] = b
		}
	}
	for g := range groups {
		b := take(tableBlocks)
		if record {
			f.inodeTable[g] = b
		}
	}
}

// writeGroups writes the bitmaps, the group descriptor table and the
// superblock with its backups.
//
// Long: the bitmaps, free counts, group descriptors and superblock copies
// all derive from the one sorted list of used runs built here; split, that
// list and its checks would be passed around.
func (f *finisher) writeGroups(ctx context.Context) error {
	w := f.w
	var used []run
	for ino := range f.nodes {
		if n := &f.nodes[ino]; n.data != nil && ino != journalIno {
			for _, e := range n.data.extents() {
				used = append(used, run{e.phys, uint64(e.len)})
			}
		}
	}
	used = append(used, w.metaRuns...)
	for g := uint64(0); g < f.groups; g++ {
		if isBackupGroup(g) {
			used = append(used, run{g * blocksPerGrp, 1 + f.gdt})
		}
	}
	sort.Slice(used, func(i, j int) bool { return used[i].start < used[j].start })
	for i := 1; i < len(used); i++ {
		if used[i].start < used[i-1].start+used[i-1].len {
			return fmt.Errorf("ext4: internal error: block %d allocated twice", used[i].start)
		}
	}
	if k := len(used); k > 0 && used[k-1].start+used[k-1].len > f.blocks {
		return w.tooSmall(used[k-1].start + used[k-1].len)
	}

	last := uint64(len(f.nodes) - 1)
	ipg := uint64(f.ipg)
	dirs := make([]uint32, f.groups)
	for ino := range f.nodes {
		if n := &f.nodes[ino]; n.in != nil && n.in.Type == fstree.TypeDir {
			dirs[uint64(ino-1)/ipg]++
		}
	}
	gdt := make([]byte, f.gdt*blockSize)
	var freeBlocks uint64
	bm := make([]byte, blockSize)
	ui := 0
	for g := uint64(0); g < f.groups; g++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		// block bitmap
		clear(bm)
		gs, ge := g*blocksPerGrp, (g+1)*blocksPerGrp
		for ui < len(used) && used[ui].start < ge {
			r := used[ui]
			s, e := max(r.start, gs), min(r.start+r.len, ge)
			setBits(bm, s-gs, e-gs)
			if r.start+r.len > ge {
				break // continues in the next group
			}
			ui++
		}
		valid := uint64(blocksPerGrp)
		if ge > f.blocks {
			valid = f.blocks - gs
			setBits(bm, valid, blocksPerGrp)
		}
		free := blocksPerGrp - popcount(bm)
		freeBlocks += free
		gd := groupDesc{Flags: bgInodeZeroed}
		gd.BlockBitmapCsumLo, gd.BlockBitmapCsumHi = split32(crc32cRaw(f.csumSeed, bm))
		if _, err := w.f.WriteAt(bm, int64(f.blockBmp[g])*blockSize); err != nil {
			return fmt.Errorf("ext4: writing block bitmap: %w", err)
		}
		// inode bitmap
		clear(bm)
		usedInodes := uint64(0)
		if last > g*ipg {
			usedInodes = min(ipg, last-g*ipg)
		}
		setBits(bm, 0, usedInodes)
		setBits(bm, ipg, blocksPerGrp)
		gd.InodeBitmapCsumLo, gd.InodeBitmapCsumHi = split32(crc32cRaw(f.csumSeed, bm[:ipg/8]))
		if _, err := w.f.WriteAt(bm, int64(f.inodeBmp[g])*blockSize); err != nil {
			return fmt.Errorf("ext4: writing inode bitmap: %w", err)
		}
		gd.BlockBitmapLo, gd.BlockBitmapHi = uint32(f.blockBmp[g]), uint32(f.blockBmp[g]>>32)
		gd.InodeBitmapLo, gd.InodeBitmapHi = uint32(f.inodeBmp[g]), uint32(f.inodeBmp[g]>>32)
		gd.InodeTableLo, gd.InodeTableHi = uint32(f.inodeTable[g]), uint32(f.inodeTable[g]>>32)
		gd.FreeBlocksCountLo, gd.FreeBlocksCountHi = split32(uint32(free))
		gd.FreeInodesCountLo, gd.FreeInodesCountHi = split32(uint32(ipg - usedInodes))
		gd.ItableUnusedLo, gd.ItableUnusedHi = split32(uint32(ipg - usedInodes))
		gd.UsedDirsCountLo, gd.UsedDirsCountHi = split32(dirs[g])
		copy(gdt[g*descSize:], gd.marshal(f.csumSeed, uint32(g)))
	}

	sde := uint32(w.opts.SourceDateEpoch)
	sb := superblock{
		InodesCount:       uint32(f.groups * ipg),
		BlocksCountLo:     uint32(f.blocks),
		BlocksCountHi:     uint32(f.blocks >> 32),
		FreeBlocksCountLo: uint32(freeBlocks),
		FreeBlocksCountHi: uint32(freeBlocks >> 32),
		FreeInodesCount:   uint32(f.groups*ipg - last),
		LogBlockSize:      logBlockSize,
		LogClusterSize:    logBlockSize,
		BlocksPerGroup:    blocksPerGrp,
		ClustersPerGroup:  blocksPerGrp,
		InodesPerGroup:    f.ipg,
		Wtime:             sde,
		MaxMntCount:       0xFFFF,
		Magic:             superMagic,
		State:             1, // cleanly unmounted
		Errors:            1, // continue
		Lastcheck:         sde,
		RevLevel:          1,
		FirstIno:          firstIno,
		InodeSize:         inodeSize,
		FeatureCompat:     compatExtAttr | compatDirIndex,
		FeatureIncompat:   incompatFiletype | incompatExtents | incompat64bit | incompatFlexBG,
		FeatureRoCompat: roCompatSparseSuper | roCompatLargeFile | roCompatHugeFile | roCompatDirNlink |
			roCompatExtraIsize | roCompatMetadataCsum,
		UUID:             f.uuid,
		HashSeed:         f.hashSeed,
		DefHashVersion:   hashHalfMD4,
		DescSize:         descSize,
		DefaultMountOpts: 0x0004 | 0x0008, // user_xattr, acl
		MkfsTime:         sde,
		MinExtraIsize:    extraIsize,
		WantExtraIsize:   extraIsize,
		Flags:            flagUnsignedHash,
		LogGroupsPerFlex: 4,
		ChecksumType:     1, // crc32c
		WtimeHi:          uint8(w.opts.SourceDateEpoch >> 32),
		MkfsTimeHi:       uint8(w.opts.SourceDateEpoch >> 32),
		LastcheckHi:      uint8(w.opts.SourceDateEpoch >> 32),
	}
	copy(sb.VolumeName[:], w.opts.Label)
	if j := &f.nodes[journalIno]; j.in != nil {
		ji, err := f.info(j)
		if err != nil {
			return err
		}
		sb.FeatureCompat |= compatHasJournal
		sb.JournalInum = journalIno
		sb.JnlBackupType = 1 // EXT3_JNL_BACKUP_BLOCKS: s_jnl_blocks mirrors i_block
		for i := 0; i < 15; i++ {
			sb.JnlBlocks[i] = le.Uint32(ji.iblock[4*i:])
		}
		sb.JnlBlocks[15] = uint32(ji.size >> 32)
		sb.JnlBlocks[16] = uint32(ji.size)
	}
	for g := uint64(0); g < f.groups; g++ {
		if !isBackupGroup(g) {
			continue
		}
		sb.BlockGroupNr = uint16(g)
		off := int64(g*blocksPerGrp) * blockSize
		if g == 0 {
			off = superblockOffset
		}
		if _, err := w.f.WriteAt(sb.marshal(), off); err != nil {
			return fmt.Errorf("ext4: writing superblock: %w", err)
		}
		if _, err := w.f.WriteAt(gdt, int64(g*blocksPerGrp+1)*blockSize); err != nil {
			return fmt.Errorf("ext4: writing group descriptors: %w", err)
		}
	}
	return nil
}

func split32(v uint32) (uint16, uint16) { return uint16(v), uint16(v >> 16) }

// setBits sets bits [from, to) of a bitmap.
func setBits(bm []byte, from, to uint64) {
	for from < to && from%8 != 0 {
		bm[from/8] |= 1 << (from % 8)
		from++
	}
	for from+8 <= to {
		bm[from/8] = 0xFF
		from += 8
	}
	for from < to {
		bm[from/8] |= 1 << (from % 8)
		from++
	}
}

func popcount(b []byte) uint64 {
	var n int
	for i := 0; i+8 <= len(b); i += 8 {
		n += bits.OnesCount64(le.Uint64(b[i:]))
	}
	return uint64(n)
}
