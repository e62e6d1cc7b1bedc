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
	"iter"
	"sort"
	"strings"

	"github.com/docker2vm/docker2vm/internal/confine"
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
// pointing at the same *Inode. An inode made as a literal (or by NewDir,
// CopyMeta) is detached: no entry names it until Link adds one. Its Type
// must not change once it is linked. Copy one with CopyMeta: a copy of the
// struct would share the original's entries.
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

	// The tree's own: a directory's entries by name ("." and ".."
	// excluded), and the number of entries naming this inode. Only Link,
	// Unlink, Detach and Move change them, so that the counts stay right
	// (read them with Child, Children and Links).
	children *dirents
	links    uint32

	// Gen is the builder's to mark inodes with (the layer merge records
	// the layer that made each one); the tree ignores it and CopyMeta
	// does not copy it. It costs nothing: it fills the struct's padding.
	Gen uint32
}

// Links is the number of directory entries naming n: any number for a file
// (its hardlinks), 0 or 1 for a directory (directories have one name; the
// root and a detached inode have none).
func (n *Inode) Links() uint32 { return n.links }

// Child returns a directory's entry name, or nil.
func (n *Inode) Child(name string) *Inode { return n.children.get(name) }

// NumChildren is the number of a directory's entries.
func (n *Inode) NumChildren() int { return n.children.len() }

// Children iterates over a directory's entries in no particular order
// (SortedNames gives them in order). The loop may Unlink or Detach the
// entries of n it has been given.
func (n *Inode) Children() iter.Seq2[string, *Inode] {
	return n.children.all
}

// CopyMeta returns a new detached inode of n's type with n's metadata:
// mode, owner, times, symlink target, device numbers and a copy of the
// xattrs. It has no content, no entries and no links.
func (n *Inode) CopyMeta() *Inode {
	return &Inode{Type: n.Type, Mode: n.Mode, UID: n.UID, GID: n.GID, Mtime: n.Mtime, Atime: n.Atime, Ctime: n.Ctime,
		Target: n.Target, Major: n.Major, Minor: n.Minor, Xattrs: append([]Xattr(nil), n.Xattrs...)}
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

// NewDir returns an empty detached directory inode.
func NewDir(mode, uid, gid uint32) *Inode {
	return &Inode{Type: TypeDir, Mode: mode & 07777, UID: uid, GID: gid, children: &dirents{}}
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
var ErrNotDir = confine.ErrNotDir

// Lookup returns the inode at a clean slash-separated path relative to the
// root ("" or "." is the root). It does not follow symlinks.
func (t *Tree) Lookup(p string) (*Inode, bool) {
	n := t.Root
	for _, name := range Split(p) {
		if n.Type != TypeDir {
			return nil, false
		}
		c := n.children.get(name)
		if c == nil {
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

// Link adds child to dir as name, replacing (and unlinking) whatever was
// there. Linking a detached inode or subtree puts it in the tree (a new
// file, a subtree grafted from elsewhere); linking a file that already has
// names adds a hardlink. A directory has one name: give it another with
// Move. Content released by the replaced entry goes to release (may be
// nil); child itself is counted before the old entry goes, so replacing the
// directory that holds child's other name keeps child and its content.
// Link panics when dir is not a directory, child is a directory that
// already has a name, or dir is inside child.
func Link(dir *Inode, name string, child *Inode, release func(Content)) {
	if dir.Type != TypeDir {
		panic(fmt.Sprintf("fstree: Link %q into a %s", name, dir.Type))
	}
	old := dir.children.get(name)
	if old == child {
		return
	}
	if child.Type == TypeDir {
		if child.links > 0 {
			panic(fmt.Sprintf("fstree: Link %q: the directory already has a name (Move it)", name))
		}
		if within(child, dir) {
			panic(fmt.Sprintf("fstree: Link %q: the directory would be inside itself", name))
		}
	}
	if dir.children == nil {
		dir.children = &dirents{}
	}
	child.links++
	dir.children.set(name, child)
	if old != nil {
		drop(old, release)
	}
}

// Unlink removes name from dir. Content of files whose last link goes (and
// of everything below a removed directory) is passed to release (may be
// nil). A missing name is not an error.
func Unlink(dir *Inode, name string, release func(Content)) {
	old, ok := dir.children.del(name)
	if !ok {
		return
	}
	drop(old, release)
}

// Detach removes name from dir and returns what it named (nil if nothing),
// intact: a directory keeps its subtree, a file its content even when that
// was its last name. The caller links it elsewhere (or releases it).
func Detach(dir *Inode, name string) *Inode {
	n, ok := dir.children.del(name)
	if !ok {
		return nil
	}
	n.links--
	return n
}

// Move gives the entry fromName of fromDir the name toName in toDir
// instead, in the same tree or another one (grafting a subtree). Its link
// count does not change; whatever toName named is unlinked, its content
// passed to release. It fails when fromName does not exist or is a
// directory that toDir is inside of.
func Move(fromDir *Inode, fromName string, toDir *Inode, toName string, release func(Content)) error {
	n := fromDir.children.get(fromName)
	if n == nil {
		return fmt.Errorf("fstree: moving %q: no such entry", fromName)
	}
	if toDir.Type != TypeDir {
		return fmt.Errorf("fstree: moving %q into a %s", fromName, toDir.Type)
	}
	if fromDir == toDir && fromName == toName {
		return nil
	}
	if n.Type == TypeDir && within(n, toDir) {
		return fmt.Errorf("fstree: moving %q into itself", fromName)
	}
	Detach(fromDir, fromName)
	Link(toDir, toName, n, release)
	return nil
}

// within reports whether dir is sub or below it.
func within(sub, dir *Inode) bool {
	if sub == dir {
		return true
	}
	for _, c := range sub.Children() {
		if c.Type == TypeDir && within(c, dir) {
			return true
		}
	}
	return false
}

func drop(n *Inode, release func(Content)) {
	if n.links > 0 {
		n.links--
	}
	if n.Type == TypeDir {
		for _, c := range n.Children() {
			drop(c, release)
		}
		n.children = nil
		return
	}
	if n.links == 0 && n.Content != nil {
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
		if err := walk(cp, n.children.get(name), fn); err != nil && err != SkipDir {
			return err
		}
	}
	return nil
}

// SortedNames returns a directory's entry names in byte order.
func SortedNames(n *Inode) []string { return n.children.names() }
