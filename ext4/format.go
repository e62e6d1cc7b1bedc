// Package ext4 writes and reads ext4 filesystem images in pure Go: no
// e2fsprogs, no root, no mounts. The writer streams file data straight into
// the image as it arrives and lays out all metadata at the end; the reader
// opens images made by mke2fs or by the writer. The package knows nothing of
// OCI; it consumes and produces fstree trees.
package ext4

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/docker2vm/docker2vm/fstree"
)

// On-disk constants. Names follow the kernel's fs/ext4/ext4.h so they can be
// looked up there.
const (
	superblockOffset = 1024
	superblockSize   = 1024
	superMagic       = 0xEF53

	blockSize    = 4096 // the writer's block size
	logBlockSize = 2    // 1024 << 2
	blocksPerGrp = 8 * blockSize
	inodeSize    = 256
	extraIsize   = 32 // i_extra_isize: everything up to i_projid
	descSize     = 64 // 64bit group descriptors
	firstIno     = 11

	rootIno    = 2
	journalIno = 8

	// s_feature_compat
	compatHasJournal = 0x4
	compatExtAttr    = 0x8
	compatDirIndex   = 0x20

	// s_feature_incompat
	incompatFiletype   = 0x2
	incompatRecover    = 0x4
	incompatMetaBG     = 0x10
	incompatExtents    = 0x40
	incompat64bit      = 0x80
	incompatMMP        = 0x100
	incompatFlexBG     = 0x200
	incompatEAInode    = 0x400
	incompatCsumSeed   = 0x2000
	incompatLargedir   = 0x4000
	incompatInlineData = 0x8000
	incompatCasefold   = 0x20000

	// s_feature_ro_compat
	roCompatSparseSuper  = 0x1
	roCompatLargeFile    = 0x2
	roCompatHugeFile     = 0x8
	roCompatDirNlink     = 0x20
	roCompatExtraIsize   = 0x40
	roCompatBigalloc     = 0x200
	roCompatMetadataCsum = 0x400

	// s_flags
	flagUnsignedHash = 0x2

	// bg_flags
	bgInodeZeroed = 0x4

	// i_flags
	flagIndex     = 0x1000
	flagExtents   = 0x80000
	flagInlineDat = 0x10000000

	// i_mode file types
	sIFSOCK = 0xC000
	sIFLNK  = 0xA000
	sIFREG  = 0x8000
	sIFBLK  = 0x6000
	sIFDIR  = 0x4000
	sIFCHR  = 0x2000
	sIFIFO  = 0x1000
	sIFMT   = 0xF000

	// directory entry file types
	ftUnknown = 0
	ftReg     = 1
	ftDir     = 2
	ftChr     = 3
	ftBlk     = 4
	ftFIFO    = 5
	ftSock    = 6
	ftSymlink = 7
	ftCsum    = 0xDE // the checksum tail's fake file type

	// dx hash versions
	hashLegacy   = 0
	hashHalfMD4  = 1
	hashTea      = 2
	hashUnsigned = 3 // added to the above when s_flags says unsigned

	extentMagic = 0xF30A
	xattrMagic  = 0xEA020000

	maxLinks = 65000 // EXT4_LINK_MAX
)

// superblock is struct ext4_super_block, 1024 bytes at byte 1024 of the
// image (and at the start of each backup group).
type superblock struct {
	InodesCount       uint32
	BlocksCountLo     uint32
	RBlocksCountLo    uint32
	FreeBlocksCountLo uint32
	FreeInodesCount   uint32
	FirstDataBlock    uint32
	LogBlockSize      uint32
	LogClusterSize    uint32
	BlocksPerGroup    uint32
	ClustersPerGroup  uint32
	InodesPerGroup    uint32
	Mtime             uint32
	Wtime             uint32
	MntCount          uint16
	MaxMntCount       uint16
	Magic             uint16
	State             uint16
	Errors            uint16
	MinorRevLevel     uint16
	Lastcheck         uint32
	Checkinterval     uint32
	CreatorOS         uint32
	RevLevel          uint32
	DefResuid         uint16
	DefResgid         uint16
	FirstIno          uint32
	InodeSize         uint16
	BlockGroupNr      uint16
	FeatureCompat     uint32
	FeatureIncompat   uint32
	FeatureRoCompat   uint32
	UUID              [16]byte
	VolumeName        [16]byte
	LastMounted       [64]byte
	AlgorithmBitmap   uint32
	PreallocBlocks    uint8
	PreallocDirBlocks uint8
	ReservedGdtBlocks uint16
	JournalUUID       [16]byte
	JournalInum       uint32
	JournalDev        uint32
	LastOrphan        uint32
	HashSeed          [4]uint32
	DefHashVersion    uint8
	JnlBackupType     uint8
	DescSize          uint16
	DefaultMountOpts  uint32
	FirstMetaBg       uint32
	MkfsTime          uint32
	JnlBlocks         [17]uint32
	BlocksCountHi     uint32
	RBlocksCountHi    uint32
	FreeBlocksCountHi uint32
	MinExtraIsize     uint16
	WantExtraIsize    uint16
	Flags             uint32
	RaidStride        uint16
	MMPInterval       uint16
	MMPBlock          uint64
	RaidStripeWidth   uint32
	LogGroupsPerFlex  uint8
	ChecksumType      uint8
	EncryptionLevel   uint8
	_                 uint8
	KbytesWritten     uint64
	SnapshotInum      uint32
	SnapshotID        uint32
	SnapshotRBlocks   uint64
	SnapshotList      uint32
	ErrorCount        uint32
	FirstErrorTime    uint32
	FirstErrorIno     uint32
	FirstErrorBlock   uint64
	FirstErrorFunc    [32]byte
	FirstErrorLine    uint32
	LastErrorTime     uint32
	LastErrorIno      uint32
	LastErrorLine     uint32
	LastErrorBlock    uint64
	LastErrorFunc     [32]byte
	MountOpts         [64]byte
	UsrQuotaInum      uint32
	GrpQuotaInum      uint32
	OverheadClusters  uint32
	BackupBgs         [2]uint32
	EncryptAlgos      [4]uint8
	EncryptPwSalt     [16]byte
	LpfIno            uint32
	PrjQuotaInum      uint32
	ChecksumSeed      uint32
	WtimeHi           uint8
	MtimeHi           uint8
	MkfsTimeHi        uint8
	LastcheckHi       uint8
	FirstErrorTimeHi  uint8
	LastErrorTimeHi   uint8
	FirstErrorErrcode uint8
	LastErrorErrcode  uint8
	Encoding          uint16
	EncodingFlags     uint16
	OrphanFileInum    uint32
	Reserved          [94]uint32
	Checksum          uint32
}

func (sb *superblock) marshal() []byte {
	b := make([]byte, superblockSize)
	if _, err := binary.Encode(b, binary.LittleEndian, sb); err != nil {
		panic("ext4: superblock layout: " + err.Error()) // a programming error: the struct is fixed-size
	}
	binary.LittleEndian.PutUint32(b[0x3FC:], crc32cRaw(^uint32(0), b[:0x3FC]))
	return b
}

// binaryDecode reads a fixed-size little-endian struct.
func binaryDecode(b []byte, v any) (int, error) {
	n, err := binary.Decode(b, binary.LittleEndian, v)
	if err != nil {
		return n, fmt.Errorf("ext4: decoding %T: %w", v, err)
	}
	return n, nil
}

func (sb *superblock) blocksCount() uint64 {
	n := uint64(sb.BlocksCountLo)
	if sb.FeatureIncompat&incompat64bit != 0 {
		n |= uint64(sb.BlocksCountHi) << 32
	}
	return n
}

// groupDesc is struct ext4_group_desc (64 bytes with 64bit; the first 32
// bytes otherwise).
type groupDesc struct {
	BlockBitmapLo     uint32
	InodeBitmapLo     uint32
	InodeTableLo      uint32
	FreeBlocksCountLo uint16
	FreeInodesCountLo uint16
	UsedDirsCountLo   uint16
	Flags             uint16
	ExcludeBitmapLo   uint32
	BlockBitmapCsumLo uint16
	InodeBitmapCsumLo uint16
	ItableUnusedLo    uint16
	Checksum          uint16
	BlockBitmapHi     uint32
	InodeBitmapHi     uint32
	InodeTableHi      uint32
	FreeBlocksCountHi uint16
	FreeInodesCountHi uint16
	UsedDirsCountHi   uint16
	ItableUnusedHi    uint16
	ExcludeBitmapHi   uint32
	BlockBitmapCsumHi uint16
	InodeBitmapCsumHi uint16
	_                 uint32
}

// marshal encodes the descriptor of group g with its metadata_csum checksum
// (crc32c of the group number and the descriptor, low 16 bits).
func (gd *groupDesc) marshal(csumSeed uint32, g uint32) []byte {
	gd.Checksum = 0
	b := make([]byte, descSize)
	if _, err := binary.Encode(b, binary.LittleEndian, gd); err != nil {
		panic("ext4: group descriptor layout: " + err.Error())
	}
	var le [4]byte
	binary.LittleEndian.PutUint32(le[:], g)
	c := crc32cRaw(crc32cRaw(csumSeed, le[:]), b)
	binary.LittleEndian.PutUint16(b[0x1E:], uint16(c))
	gd.Checksum = uint16(c)
	return b
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32cRaw is the kernel's crc32c(seed, p): no pre- or post-inversion,
// which is how ext4 and jbd2 chain their checksums.
func crc32cRaw(seed uint32, p []byte) uint32 {
	return ^crc32.Update(^seed, castagnoli, p)
}

// inodeCsumSeed is the per-inode checksum seed: the filesystem seed chained
// with the inode number and generation.
func inodeCsumSeed(fsSeed, ino, gen uint32) uint32 {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], ino)
	c := crc32cRaw(fsSeed, b[:])
	binary.LittleEndian.PutUint32(b[:], gen)
	return crc32cRaw(c, b[:])
}

// Inode field offsets (struct ext4_inode).
const (
	iMode        = 0x00
	iUID         = 0x02
	iSizeLo      = 0x04
	iAtime       = 0x08
	iCtime       = 0x0C
	iMtime       = 0x10
	iGID         = 0x18
	iLinks       = 0x1A
	iBlocksLo    = 0x1C
	iFlags       = 0x20
	iBlock       = 0x28
	iFileACLLo   = 0x68
	iSizeHigh    = 0x6C
	iBlocksHi    = 0x74
	iFileACLHi   = 0x76
	iUIDHi       = 0x78
	iGIDHi       = 0x7A
	iCsumLo      = 0x7C
	iExtraIsize  = 0x80
	iCsumHi      = 0x82
	iCtimeExtra  = 0x84
	iMtimeExtra  = 0x88
	iAtimeExtra  = 0x8C
	iCrtime      = 0x90
	iCrtimeExtra = 0x94
)

// setInodeCsum stores the metadata_csum checksum of a 256-byte inode.
func setInodeCsum(b []byte, seed uint32) {
	binary.LittleEndian.PutUint16(b[iCsumLo:], 0)
	binary.LittleEndian.PutUint16(b[iCsumHi:], 0)
	c := crc32cRaw(seed, b)
	binary.LittleEndian.PutUint16(b[iCsumLo:], uint16(c))
	binary.LittleEndian.PutUint16(b[iCsumHi:], uint16(c>>16))
}

// encodeTime splits a timestamp into the 32-bit seconds field and the
// _extra field (2 epoch bits extending seconds to 34 bits, 30 bits of nsec).
func encodeTime(sec int64, nsec uint32) (lo uint32, extra uint32) {
	lo = uint32(int32(sec))
	epoch := uint32((sec-int64(int32(sec)))>>32) & 3
	return lo, epoch | (nsec%1e9)<<2
}

func decodeTime(lo, extra uint32) (int64, uint32) {
	sec := int64(int32(lo)) + int64(extra&3)<<32
	return sec, extra >> 2
}

// le is shorthand for the byte order of everything but the journal.
var le = binary.LittleEndian

// fileTypes maps each kind of inode to its mode bits (S_IFMT) and its
// directory-entry file type, for the writer and the reader alike.
var fileTypes = [...]struct {
	t    fstree.Type
	ifmt uint16
	ft   uint8
}{
	{fstree.TypeRegular, sIFREG, ftReg},
	{fstree.TypeDir, sIFDIR, ftDir},
	{fstree.TypeSymlink, sIFLNK, ftSymlink},
	{fstree.TypeCharDev, sIFCHR, ftChr},
	{fstree.TypeBlockDev, sIFBLK, ftBlk},
	{fstree.TypeFIFO, sIFIFO, ftFIFO},
	{fstree.TypeSocket, sIFSOCK, ftSock},
}

// ifmtOf returns the S_IFMT bits of t (0 for an unknown type).
func ifmtOf(t fstree.Type) uint16 {
	for _, e := range fileTypes {
		if e.t == t {
			return e.ifmt
		}
	}
	return 0
}

// typeOfIfmt returns the type whose S_IFMT bits are ifmt.
func typeOfIfmt(ifmt uint16) (fstree.Type, bool) {
	for _, e := range fileTypes {
		if e.ifmt == ifmt {
			return e.t, true
		}
	}
	return 0, false
}

// fileType returns t's directory-entry file type (ftUnknown if none).
func fileType(t fstree.Type) uint8 {
	for _, e := range fileTypes {
		if e.t == t {
			return e.ft
		}
	}
	return ftUnknown
}

// ftToType returns the type of a directory-entry file type (0 if unknown).
func ftToType(ft uint8) fstree.Type {
	for _, e := range fileTypes {
		if e.ft == ft {
			return e.t
		}
	}
	return 0
}
