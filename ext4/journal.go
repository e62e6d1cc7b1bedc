package ext4

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/docker2vm/docker2vm/fstree"
)

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

// makeJournal allocates the journal (contiguous fresh blocks, left as
// holes: an empty journal needs only its superblock) as inode 8.
func (f *finisher) makeJournal(ctx context.Context) error {
	w := f.w
	if w.opts.NoJournal {
		return nil
	}
	var jb uint64
	switch {
	case w.opts.JournalSize > 0:
		jb = uint64(w.opts.JournalSize) / blockSize
		if jb < minJournalBlocks {
			return fmt.Errorf("ext4: journal size %d is below the minimum of %d bytes", w.opts.JournalSize, minJournalBlocks*blockSize)
		}
	case w.opts.Size > 0:
		jb = defaultJournalBlocks(uint64(w.opts.Size) / blockSize)
	default:
		jb = defaultJournalBlocks(w.alloc.next + w.headroom(w.alloc.next))
	}
	c := &content{w: w, size: int64(jb) * blockSize}
	for l := uint64(0); l < jb; {
		r := w.alloc.fresh(jb - l)
		w.metaRuns = append(w.metaRuns, r)
		c.appendRun(l, r)
		l += r.len
	}
	sde := fstree.Timestamp{Sec: w.opts.SourceDateEpoch}
	f.nodes[journalIno] = node{in: &fstree.Inode{Type: fstree.TypeRegular, Mode: 0o600, Mtime: sde, Atime: sde, Ctime: sde}, links: 1, data: c}
	if err := f.layoutOne(journalIno, &f.nodes[journalIno]); err != nil {
		return fmt.Errorf("ext4: journal: %w", err)
	}
	jsb := journalSuperblock{
		Magic:           jbd2Magic,
		BlockType:       jbd2SuperblockV2,
		BlockSize:       blockSize,
		MaxLen:          uint32(jb),
		First:           1,
		Sequence:        1,
		FeatureIncompat: jbd2Incompat64bit | jbd2IncompatCsumV3,
		UUID:            f.uuid,
		NrUsers:         1,
		ChecksumType:    jbd2CRC32C,
	}
	if _, err := w.f.WriteAt(jsb.marshal(), int64(c.extents()[0].phys)*blockSize); err != nil {
		return fmt.Errorf("ext4: writing journal superblock: %w", err)
	}
	return nil
}
