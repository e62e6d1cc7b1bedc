package ext4

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/docker2vm/docker2vm/fstree"
)

// Xattr name indexes (e_name_index): the prefix is stored as a number.
var xattrPrefixes = []struct {
	index  uint8
	prefix string
	exact  bool // the whole name, no suffix
}{
	{2, "system.posix_acl_access", true},
	{3, "system.posix_acl_default", true},
	{8, "system.richacl", true},
	{1, "user.", false},
	{4, "trusted.", false},
	{6, "security.", false},
	{7, "system.", false},
}

func xattrPrefix(index uint8) (string, bool) {
	for _, p := range xattrPrefixes {
		if p.index == index {
			return p.prefix, true
		}
	}
	return "", false
}

// diskXattr is one attribute in on-disk form.
type diskXattr struct {
	index uint8
	name  string // suffix after the prefix
	value []byte // on-disk value (ACLs converted)
	hash  uint32
}

const (
	xattrEntryHdr  = 16
	xattrIbodyOff  = 128 + extraIsize // header magic, then entries
	xattrIbodySize = inodeSize - xattrIbodyOff - 4
	xattrBlockHdr  = 32
)

func pad4(n int) int { return (n + 3) &^ 3 }

func (x *diskXattr) entrySize() int { return xattrEntryHdr + pad4(len(x.name)) }
func (x *diskXattr) valueSize() int { return pad4(len(x.value)) }

// toDiskXattrs converts the tree's attributes, sorted as the kernel keeps
// them in a block (index, name length, name).
func toDiskXattrs(xs []fstree.Xattr) ([]diskXattr, error) {
	out := make([]diskXattr, 0, len(xs))
	for _, x := range xs {
		d := diskXattr{value: x.Value}
		found := false
		for _, p := range xattrPrefixes {
			if p.exact && x.Name == p.prefix || !p.exact && strings.HasPrefix(x.Name, p.prefix) && len(x.Name) > len(p.prefix) {
				d.index, d.name, found = p.index, x.Name[len(p.prefix):], true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("xattr %q: namespace not supported by ext4", x.Name)
		}
		if len(d.name) > 255 {
			return nil, fmt.Errorf("xattr %q: name longer than 255 bytes", x.Name)
		}
		if d.index == 2 || d.index == 3 {
			v, err := aclToDisk(x.Value)
			if err != nil {
				return nil, fmt.Errorf("xattr %q: %w", x.Name, err)
			}
			d.value = v
		}
		d.hash = xattrEntryHash(d.name, d.value)
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.index != b.index {
			return a.index < b.index
		}
		if len(a.name) != len(b.name) {
			return len(a.name) < len(b.name)
		}
		return a.name < b.name
	})
	return out, nil
}

// splitXattrs puts as many attributes as fit in the inode body (in order,
// skipping those that do not fit) and the rest in a block.
func splitXattrs(xs []diskXattr) (ibody, block []diskXattr, err error) {
	room := xattrIbodySize
	for _, x := range xs {
		need := x.entrySize() + x.valueSize()
		if need <= room {
			ibody = append(ibody, x)
			room -= need
		} else {
			block = append(block, x)
		}
	}
	if len(block) > 0 {
		total := xattrBlockHdr + 4
		for _, x := range block {
			total += x.entrySize() + x.valueSize()
		}
		if total > blockSize {
			return nil, nil, fmt.Errorf("xattrs need %d bytes outside the inode; one %d-byte block is the limit", total, blockSize)
		}
	}
	return ibody, block, nil
}

// encodeIbody lays out in-inode attributes: magic, entries, end marker, and
// values packed at the end; value offsets count from the first entry.
func encodeIbody(xs []diskXattr) []byte {
	b := make([]byte, inodeSize-xattrIbodyOff)
	le.PutUint32(b, xattrMagic)
	encodeEntries(b[4:], xs, 0)
	return b
}

// encodeXattrBlock lays out a block (checksum, hash and refcount are set by
// the caller once the block number is known).
func encodeXattrBlock(xs []diskXattr) []byte {
	b := make([]byte, blockSize)
	le.PutUint32(b, xattrMagic)
	le.PutUint32(b[8:], 1) // h_blocks
	encodeEntries(b, xs, xattrBlockHdr)
	hashes := make([]uint32, len(xs))
	for i, x := range xs {
		hashes[i] = x.hash
	}
	le.PutUint32(b[12:], xattrBlockHash(hashes))
	return b
}

// encodeEntries writes entries from byte start of area and values from its
// end downwards; offsets are relative to the start of area.
func encodeEntries(area []byte, xs []diskXattr, start int) {
	p, vend := start, len(area)
	for _, x := range xs {
		e := area[p:]
		e[0] = uint8(len(x.name))
		e[1] = x.index
		if len(x.value) > 0 {
			vend -= x.valueSize()
			copy(area[vend:], x.value)
			le.PutUint16(e[2:], uint16(vend))
		}
		le.PutUint32(e[8:], uint32(len(x.value)))
		le.PutUint32(e[12:], x.hash)
		copy(e[16:], x.name)
		p += x.entrySize()
	}
}

// POSIX ACLs: the xattr API uses version 2 with 8-byte entries; ext4 stores
// version 1 with 4-byte entries for the tags that carry no id.
const (
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20
)

func aclToDisk(v []byte) ([]byte, error) {
	if len(v) < 4 || le.Uint32(v) != 2 || (len(v)-4)%8 != 0 {
		return nil, errors.New("not a version 2 POSIX ACL")
	}
	out := make([]byte, 4, len(v))
	le.PutUint32(out, 1)
	for p := 4; p < len(v); p += 8 {
		tag := le.Uint16(v[p:])
		switch tag {
		case aclUserObj, aclGroupObj, aclMask, aclOther:
			out = append(out, v[p:p+4]...)
		case aclUser, aclGroup:
			out = append(out, v[p:p+8]...)
		default:
			return nil, fmt.Errorf("unknown ACL tag %#x", tag)
		}
	}
	return out, nil
}

func aclFromDisk(v []byte) ([]byte, error) {
	if len(v) < 4 || le.Uint32(v) != 1 {
		return nil, errors.New("not a version 1 ext4 ACL")
	}
	out := make([]byte, 4, 4+2*len(v))
	le.PutUint32(out, 2)
	for p := 4; p < len(v); {
		if p+4 > len(v) {
			return nil, errors.New("truncated ACL")
		}
		tag := le.Uint16(v[p:])
		var e [8]byte
		copy(e[:4], v[p:p+4])
		switch tag {
		case aclUserObj, aclGroupObj, aclMask, aclOther:
			le.PutUint32(e[4:], 0xFFFFFFFF) // ACL_UNDEFINED_ID
			p += 4
		case aclUser, aclGroup:
			if p+8 > len(v) {
				return nil, errors.New("truncated ACL")
			}
			copy(e[4:], v[p+4:p+8])
			p += 8
		default:
			return nil, fmt.Errorf("unknown ACL tag %#x", tag)
		}
		out = append(out, e[:]...)
	}
	return out, nil
}

// writeXattrBlocks places the shared xattr blocks now that their
// reference counts are known.
func (f *finisher) writeXattrBlocks(ctx context.Context) error {
	for _, x := range f.xblocks {
		x.blk = f.w.metaAlloc(1).start
		le.PutUint32(x.data[4:], x.refs)
		le.PutUint32(x.data[16:], 0)
		var nr [8]byte
		le.PutUint64(nr[:], x.blk)
		le.PutUint32(x.data[16:], crc32cRaw(crc32cRaw(f.csumSeed, nr[:]), x.data))
		if err := f.w.writeAt(x.data, int64(x.blk)*blockSize); err != nil {
			return fmt.Errorf("ext4: writing xattr block: %w", err)
		}
		x.data = nil
	}
	return nil
}

// headroom is the free space (in blocks) added to an automatically sized
// image that uses `used` blocks.
