// Package fstree holds an in-memory filesystem tree: metadata only. File
// content lives in a Store (the ext4 writer, a memory store in tests) and the
// tree keeps the handle the store returned. The tree knows nothing of OCI or
// of any on-disk format; the layer merge builds it and filesystem writers
// consume it.
package fstree

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
)

// Type is the kind of an inode.
type Type uint8

const (
	TypeRegular Type = iota + 1
	TypeDir
	TypeSymlink
	TypeCharDev
	TypeBlockDev
	TypeFIFO
	TypeSocket
)

func (t Type) String() string {
	switch t {
	case TypeRegular:
		return "file"
	case TypeDir:
		return "dir"
	case TypeSymlink:
		return "symlink"
	case TypeCharDev:
		return "chardev"
	case TypeBlockDev:
		return "blockdev"
	case TypeFIFO:
		return "fifo"
	case TypeSocket:
		return "socket"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Timestamp is seconds and nanoseconds since the Unix epoch. A plain pair
// keeps the tree small and avoids time.Time's location pointer.
type Timestamp struct {
	Sec  int64
	Nsec uint32
}

// Content is a handle to a regular file's data, issued by a Store.
type Content interface {
	// Size is the file's apparent size in bytes (holes included).
	Size() int64
}

// Store receives file data as it streams out of a layer. Implementations
// write it to its final place (an ext4 image, memory in tests) and return a
// handle that the tree keeps.
type Store interface {
	// Put reads exactly size bytes from r and stores them.
	Put(ctx context.Context, r io.Reader, size int64) (Content, error)
	// Release tells the store that c is no longer referenced by the tree
	// (the file was overwritten or removed) so its space can be reused.
	Release(c Content)
}

// Opener reads back stored content. Stores that can should implement it.
type Opener interface {
	Open(c Content) (io.ReaderAt, error)
}

// Xattr is one extended attribute.
type Xattr struct {
	Name  string // full name with namespace prefix, e.g. "security.capability"
	Value []byte
}

// Inode is one filesystem object. Hardlinks are several directory entries
// pointing at the same *Inode.
type Inode struct {
	Type  Type
	Mode  uint32 // permission bits including setuid, setgid and sticky (07777)
	UID   uint32
	GID   uint32
	Mtime Timestamp
	Atime Timestamp
	Ctime Timestamp

	// Content holds a regular file's data (nil for an empty file).
	Content Content
	// Target is a symlink's target.
	Target string
	// Major and Minor are a device node's numbers.
	Major, Minor uint32
	// Xattrs are kept sorted by name.
	Xattrs []Xattr

	// Children are a directory's entries by name ("." and ".." excluded).
	Children map[string]*Inode

	// Links counts the directory entries naming this inode (for
	// non-directories). The tree's mutators keep it up to date.
	Links uint32
}

// Size is the inode's apparent size: content size for files, target length
// for symlinks, 0 otherwise.
func (n *Inode) Size() int64 {
	switch n.Type {
	case TypeRegular:
		if n.Content == nil {
			return 0
		}
		return n.Content.Size()
	case TypeSymlink:
		return int64(len(n.Target))
	}
	return 0
}

// IsDir reports whether n is a directory.
func (n *Inode) IsDir() bool { return n.Type == TypeDir }

// SetXattr sets or replaces one attribute, keeping the list sorted.
func (n *Inode) SetXattr(name string, value []byte) {
	i := sort.Search(len(n.Xattrs), func(i int) bool { return n.Xattrs[i].Name >= name })
	if i < len(n.Xattrs) && n.Xattrs[i].Name == name {
		n.Xattrs[i].Value = value
		return
	}
	n.Xattrs = append(n.Xattrs, Xattr{})
	copy(n.Xattrs[i+1:], n.Xattrs[i:])
	n.Xattrs[i] = Xattr{Name: name, Value: value}
}

// Xattr returns the value of one attribute.
func (n *Inode) Xattr(name string) ([]byte, bool) {
	for _, x := range n.Xattrs {
		if x.Name == name {
			return x.Value, true
		}
	}
	return nil, false
}

// NewDir returns an empty directory inode.
func NewDir(mode, uid, gid uint32) *Inode {
	return &Inode{Type: TypeDir, Mode: mode & 07777, UID: uid, GID: gid, Children: map[string]*Inode{}}
}

// Tree is a filesystem tree rooted at a directory.
type Tree struct {
	Root *Inode
}

// New returns a tree holding only a root directory (root-owned, 0755).
func New() *Tree {
	return &Tree{Root: NewDir(0o755, 0, 0)}
}

// ErrNotDir is returned when a path component is not a directory.
var ErrNotDir = errors.New("not a directory")

// Lookup returns the inode at a clean slash-separated path relative to the
// root ("" or "." is the root). It does not follow symlinks.
func (t *Tree) Lookup(p string) (*Inode, bool) {
	n := t.Root
	for _, name := range Split(p) {
		if n.Type != TypeDir {
			return nil, false
		}
		c, ok := n.Children[name]
		if !ok {
			return nil, false
		}
		n = c
	}
	return n, true
}

// Split splits a clean relative path into its components.
func Split(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" || p == "." {
		return nil
	}
	return strings.Split(p, "/")
}

// Link adds child under dir as name, replacing (and unlinking) whatever was
// there. It maintains link counts; released content goes to release (may be nil).
func Link(dir *Inode, name string, child *Inode, release func(Content)) {
	if old, ok := dir.Children[name]; ok {
		if old == child {
			return
		}
		Unlink(dir, name, release)
	}
	dir.Children[name] = child
	if child.Type != TypeDir {
		child.Links++
	}
}

// Unlink removes name from dir. Content of files whose last link goes (and
// of everything below a removed directory) is passed to release.
func Unlink(dir *Inode, name string, release func(Content)) {
	old, ok := dir.Children[name]
	if !ok {
		return
	}
	delete(dir.Children, name)
	drop(old, release)
}

func drop(n *Inode, release func(Content)) {
	if n.Type == TypeDir {
		for _, c := range n.Children {
			drop(c, release)
		}
		n.Children = nil
		return
	}
	if n.Links > 0 {
		n.Links--
	}
	if n.Links == 0 && n.Content != nil {
		if release != nil {
			release(n.Content)
		}
		n.Content = nil
	}
}

// WalkFunc is called for every entry; p is the slash path relative to the
// root ("" for the root itself).
type WalkFunc func(p string, n *Inode) error

// SkipDir, returned by a WalkFunc for a directory, skips its children.
var SkipDir = errors.New("skip this directory")

// Walk visits the tree depth-first with children in byte order of name,
// so that every traversal is deterministic.
func (t *Tree) Walk(fn WalkFunc) error {
	err := walk("", t.Root, fn)
	if err == SkipDir {
		return nil
	}
	return err
}

func walk(p string, n *Inode, fn WalkFunc) error {
	if err := fn(p, n); err != nil {
		return err
	}
	if n.Type != TypeDir {
		return nil
	}
	for _, name := range SortedNames(n) {
		cp := name
		if p != "" {
			cp = p + "/" + name
		}
		if err := walk(cp, n.Children[name], fn); err != nil && err != SkipDir {
			return err
		}
	}
	return nil
}

// SortedNames returns a directory's entry names in byte order.
func SortedNames(n *Inode) []string {
	names := make([]string, 0, len(n.Children))
	for name := range n.Children {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}
