package fstree

import (
	"slices"
	"strings"
)

// dirents are a directory's entries by name. Up to maxSmallDir entries
// they are a slice sorted by name: 24 bytes an entry, where a Go map takes
// about 45, and most directories are that small (a million-entry tree of
// directories of up to 400 entries took 30-40 MiB less). Past it they are
// a map: inserting out of order into a large sorted slice would move half
// of it each time (layers mostly list a directory in order, which
// appends; out of order, a thousand entries move 24 KiB at most).
type dirents struct {
	list []dirent // sorted by name; unused once m is made
	m    map[string]*Inode
}

type dirent struct {
	name string
	in   *Inode
}

const maxSmallDir = 1024

func cmpDirent(e dirent, name string) int { return strings.Compare(e.name, name) }

// find returns where name is in the list, or where it would go.
func (d *dirents) find(name string) (int, bool) {
	if n := len(d.list); n == 0 || d.list[n-1].name < name {
		return n, false // appending in order, the common case
	}
	return slices.BinarySearchFunc(d.list, name, cmpDirent)
}

func (d *dirents) get(name string) *Inode {
	switch {
	case d == nil:
		return nil
	case d.m != nil:
		return d.m[name]
	}
	if i, ok := d.find(name); ok {
		return d.list[i].in
	}
	return nil
}

// set adds or replaces name.
func (d *dirents) set(name string, in *Inode) {
	if d.m != nil {
		d.m[name] = in
		return
	}
	i, ok := d.find(name)
	switch {
	case ok:
		d.list[i].in = in
	case len(d.list) >= maxSmallDir:
		d.m = make(map[string]*Inode, len(d.list)+1)
		for _, e := range d.list {
			d.m[e.name] = e.in
		}
		d.m[name] = in
		d.list = nil
	default:
		d.list = slices.Insert(d.list, i, dirent{name, in})
	}
}

// del removes name and returns what it named.
func (d *dirents) del(name string) (*Inode, bool) {
	switch {
	case d == nil:
		return nil, false
	case d.m != nil:
		in, ok := d.m[name]
		delete(d.m, name)
		return in, ok
	}
	i, ok := d.find(name)
	if !ok {
		return nil, false
	}
	in := d.list[i].in
	d.list = slices.Delete(d.list, i, i+1)
	return in, true
}

func (d *dirents) len() int {
	switch {
	case d == nil:
		return 0
	case d.m != nil:
		return len(d.m)
	}
	return len(d.list)
}

// all yields every entry, in no particular order. The loop may delete the
// entry it was given: the list is walked from its end, so that a deletion
// moves only entries already yielded.
func (d *dirents) all(yield func(string, *Inode) bool) {
	switch {
	case d == nil:
		return
	case d.m != nil:
		for name, in := range d.m {
			if !yield(name, in) {
				return
			}
		}
		return
	}
	for i := len(d.list) - 1; i >= 0; i-- {
		if i >= len(d.list) {
			continue
		}
		if e := d.list[i]; !yield(e.name, e.in) {
			return
		}
	}
}

// names returns the names in byte order.
func (d *dirents) names() []string {
	out := make([]string, 0, d.len())
	if d != nil && d.m == nil {
		for _, e := range d.list {
			out = append(out, e.name)
		}
		return out
	}
	d.all(func(name string, _ *Inode) bool { out = append(out, name); return true })
	slices.Sort(out)
	return out
}
