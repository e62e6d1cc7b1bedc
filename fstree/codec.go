package fstree

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The tree's encoding, for keeping a merged tree between runs (a cache of
// the state after a shared prefix of layers): every inode once, depth
// first, a directory's entries in name order, a file with several names
// written at its first and referred to by number at the others. Content is
// the store's to encode (EncodeContent, DecodeContent); the tree only
// frames it. Gen is kept, so that a decoded tree is the one encoded in
// every field the merge reads.
//
//	tree   = magic inode
//	inode  = type mode uid gid mtime atime ctime content target major minor xattrs gen [entries]
//	entries = count { name ref [inode] }
//
// ref is 0 for a new inode, 1 for a new inode later entries name again
// (a file's first name of several: it takes the next number), and 2+k
// for the k-th such inode.
const codecMagic = "d2v-fstree-1\n"

// maxCodecString bounds a decoded name, target, xattr or content record: a
// damaged encoding must fail, not allocate gigabytes.
const maxCodecString = 1 << 20

// Encode writes t to w. content encodes a file's content (never nil).
func Encode(w io.Writer, t *Tree, content func(Content) ([]byte, error)) error {
	e := &encoder{w: bufio.NewWriterSize(w, 1<<20), ids: map[*Inode]uint64{}, content: content}
	e.w.WriteString(codecMagic)
	e.inode(t.Root)
	if e.err != nil {
		return e.err
	}
	return e.w.Flush()
}

type encoder struct {
	w       *bufio.Writer
	ids     map[*Inode]uint64 // files with more than one name, numbered from 0
	content func(Content) ([]byte, error)
	buf     [binary.MaxVarintLen64]byte
	err     error
}

func (e *encoder) uint(v uint64) {
	n := binary.PutUvarint(e.buf[:], v)
	e.w.Write(e.buf[:n])
}

func (e *encoder) int(v int64) {
	n := binary.PutVarint(e.buf[:], v)
	e.w.Write(e.buf[:n])
}

func (e *encoder) bytes(b []byte) {
	e.uint(uint64(len(b)))
	e.w.Write(b)
}

func (e *encoder) string(s string) {
	e.uint(uint64(len(s)))
	e.w.WriteString(s)
}

func (e *encoder) inode(n *Inode) {
	if e.err != nil {
		return
	}
	e.uint(uint64(n.Type))
	e.uint(uint64(n.Mode))
	e.uint(uint64(n.UID))
	e.uint(uint64(n.GID))
	for _, ts := range []Timestamp{n.Mtime, n.Atime, n.Ctime} {
		e.int(ts.Sec)
		e.uint(uint64(ts.Nsec))
	}
	if n.Content == nil {
		e.uint(0)
	} else {
		b, err := e.content(n.Content)
		if err != nil {
			e.err = err
			return
		}
		e.uint(1)
		e.bytes(b)
	}
	e.string(n.Target)
	e.uint(uint64(n.Major))
	e.uint(uint64(n.Minor))
	e.uint(uint64(len(n.Xattrs)))
	for _, x := range n.Xattrs {
		e.string(x.Name)
		e.bytes(x.Value)
	}
	e.uint(uint64(n.Gen))
	if n.Type != TypeDir {
		return
	}
	names := SortedNames(n)
	e.uint(uint64(len(names)))
	for _, name := range names {
		c := n.children.get(name)
		e.string(name)
		if id, ok := e.ids[c]; ok {
			e.uint(2 + id)
			continue
		}
		if c.Type != TypeDir && c.links > 1 {
			e.ids[c] = uint64(len(e.ids))
			e.uint(1)
		} else {
			e.uint(0)
		}
		e.inode(c)
	}
}

// ErrCodec is matched (errors.Is) by every failure to decode a tree: the
// encoding is damaged or from another version.
var ErrCodec = errors.New("not a valid tree encoding")

// Decode reads a tree Encode wrote. content decodes a file's content.
func Decode(r io.Reader, content func([]byte) (Content, error)) (*Tree, error) {
	d := &decoder{r: bufio.NewReaderSize(r, 1<<20), content: content}
	magic := make([]byte, len(codecMagic))
	if _, err := io.ReadFull(d.r, magic); err != nil || string(magic) != codecMagic {
		return nil, fmt.Errorf("%w: no header", ErrCodec)
	}
	root := d.inode(nil)
	if d.err != nil {
		return nil, d.err
	}
	if root.Type != TypeDir {
		return nil, fmt.Errorf("%w: the root is a %s", ErrCodec, root.Type)
	}
	if _, err := d.r.ReadByte(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the tree", ErrCodec)
	}
	return &Tree{Root: root}, nil
}

type decoder struct {
	r       *bufio.Reader
	files   []*Inode // files with more than one name, by number
	content func([]byte) (Content, error)
	err     error
}

func (d *decoder) fail(what string, err error) {
	if d.err == nil {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		d.err = fmt.Errorf("%w: %s: %v", ErrCodec, what, err)
	}
}

func (d *decoder) uint(what string, max uint64) uint64 {
	if d.err != nil {
		return 0
	}
	v, err := binary.ReadUvarint(d.r)
	if err != nil {
		d.fail(what, err)
		return 0
	}
	if v > max {
		d.fail(what, fmt.Errorf("%d is out of range", v))
		return 0
	}
	return v
}

func (d *decoder) int(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, err := binary.ReadVarint(d.r)
	if err != nil {
		d.fail(what, err)
	}
	return v
}

func (d *decoder) bytes(what string) []byte {
	n := d.uint(what, maxCodecString)
	if d.err != nil {
		return nil
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(d.r, b); err != nil {
		d.fail(what, err)
		return nil
	}
	return b
}

func (d *decoder) string(what string) string { return string(d.bytes(what)) }

// inode decodes one inode and, for a directory, its entries; link (nil
// for the root) puts it in its directory, before its entries are decoded,
// so that linking a directory finds it empty.
func (d *decoder) inode(link func(*Inode)) *Inode {
	n := &Inode{}
	if n.Type = Type(d.uint("type", uint64(TypeSocket))); n.Type == 0 && d.err == nil {
		d.fail("type", errors.New("0 is no type"))
	}
	n.Mode = uint32(d.uint("mode", 07777))
	n.UID = uint32(d.uint("uid", 1<<32-1))
	n.GID = uint32(d.uint("gid", 1<<32-1))
	for _, ts := range []*Timestamp{&n.Mtime, &n.Atime, &n.Ctime} {
		ts.Sec = d.int("time")
		ts.Nsec = uint32(d.uint("time", 999_999_999))
	}
	if d.uint("content", 1) == 1 {
		b := d.bytes("content")
		if d.err == nil {
			c, err := d.content(b)
			if err != nil {
				d.fail("content", err)
			}
			n.Content = c
		}
	}
	n.Target = d.string("symlink target")
	n.Major = uint32(d.uint("device", 1<<32-1))
	n.Minor = uint32(d.uint("device", 1<<32-1))
	if k := d.uint("xattrs", 1<<16); k > 0 {
		n.Xattrs = make([]Xattr, k)
		for i := range n.Xattrs {
			n.Xattrs[i] = Xattr{Name: d.string("xattr"), Value: d.bytes("xattr")}
		}
	}
	n.Gen = uint32(d.uint("gen", 1<<32-1))
	if d.err != nil {
		return n
	}
	if n.Type == TypeDir {
		n.children = &dirents{}
	}
	if link != nil {
		link(n)
	}
	if n.Type != TypeDir {
		return n
	}
	count := d.uint("entries", 1<<32)
	prev := ""
	for i := uint64(0); i < count && d.err == nil; i++ {
		name := d.string("name")
		if d.err != nil {
			break
		}
		if name == "" || name == "." || name == ".." || (i > 0 && name <= prev) || !validName(name) {
			d.fail("name", fmt.Errorf("%q is not a valid entry name here", name))
			break
		}
		prev = name
		ref := d.uint("link", uint64(len(d.files))+1)
		if ref >= 2 {
			Link(n, name, d.files[ref-2], nil)
			continue
		}
		d.inode(func(c *Inode) {
			if ref == 1 {
				if c.Type == TypeDir {
					d.fail("link", errors.New("a directory has one name"))
					return
				}
				d.files = append(d.files, c)
			}
			Link(n, name, c, nil)
		})
	}
	return n
}

// validName reports whether name can be one directory entry: no slash, no
// NUL.
func validName(name string) bool {
	for i := 0; i < len(name); i++ {
		if name[i] == '/' || name[i] == 0 {
			return false
		}
	}
	return true
}
