package ext4

import "encoding/binary"

// JBD2 (the journal) is big-endian.
const (
	jbd2Magic          = 0xC03B3998
	jbd2SuperblockV2   = 4
	jbd2Incompat64bit  = 0x2
	jbd2IncompatCsumV3 = 0x10
	jbd2CRC32C         = 4
	minJournalBlocks   = 1024
)

// journalSuperblock is the start of journal_superblock_t (1024 bytes in all;
// s_users and the rest stay zero for an internal journal).
type journalSuperblock struct {
	Magic           uint32
	BlockType       uint32
	HeaderSeq       uint32
	BlockSize       uint32
	MaxLen          uint32
	First           uint32
	Sequence        uint32
	Start           uint32 // 0: the journal is empty (clean)
	Errno           int32
	FeatureCompat   uint32
	FeatureIncompat uint32
	FeatureRoCompat uint32
	UUID            [16]byte
	NrUsers         uint32
	DynSuper        uint32
	MaxTransaction  uint32
	MaxTransData    uint32
	ChecksumType    uint8
	_               [3]uint8
	NumFCBlocks     uint32
	Head            uint32
	_               [40]uint32
	Checksum        uint32
}

// marshal returns the journal's first block.
func (j *journalSuperblock) marshal() []byte {
	b := make([]byte, blockSize)
	if _, err := binary.Encode(b, binary.BigEndian, j); err != nil {
		panic("ext4: journal superblock layout: " + err.Error())
	}
	binary.BigEndian.PutUint32(b[0xFC:], crc32cRaw(^uint32(0), b[:1024]))
	return b
}

// defaultJournalBlocks scales the journal with the filesystem like mke2fs.
func defaultJournalBlocks(fsBlocks uint64) uint64 {
	switch {
	case fsBlocks < 32768: // < 128 MiB
		return 1024
	case fsBlocks < 262144: // < 1 GiB
		return 4096
	default:
		return 16384
	}
}
