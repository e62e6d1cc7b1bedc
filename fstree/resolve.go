package fstree

import (
	"fmt"

	"github.com/docker2vm/docker2vm/internal/confine"
)

// Entries is an in-memory tree as confine.Resolve walks it, so that names
// resolve inside a Tree by the same rules as everywhere else. It makes
// nothing (Mkdir fails): packages that make directories on the way, or
// watch the walk, embed it and override Mkdir or Child.
type Entries struct{}

// Child implements confine.FS.
func (Entries) Child(dir *Inode, name string) (*Inode, confine.Kind, error) {
	c := dir.children.get(name)
	if c == nil {
		return nil, confine.Missing, nil
	}
	return c, c.Type.Kind(), nil
}

// Target implements confine.FS.
func (Entries) Target(n *Inode) (string, error) { return n.Target, nil }

// Mkdir implements confine.FS: it fails.
func (Entries) Mkdir(dir *Inode, name, path string) (*Inode, error) {
	return nil, fmt.Errorf("fstree: cannot make %s: the walk makes no directories", confine.Quote(path))
}

// Describe implements confine.FS.
func (Entries) Describe(n *Inode) string { return n.Type.String() }

// Kind is what an inode of type t is to confine.Resolve.
func (t Type) Kind() confine.Kind {
	switch t {
	case TypeDir:
		return confine.Dir
	case TypeSymlink:
		return confine.Symlink
	}
	return confine.Other
}
