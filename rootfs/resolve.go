package rootfs

import (
	"path"
	"strings"

	"github.com/docker2vm/docker2vm/fstree"
)

// maxSymlinkHops is Linux's MAXSYMLINKS: a lookup that follows more symlinks
// fails (ELOOP). Rule: bounded symlink hops (test: "symlink loop").
const maxSymlinkHops = 40

// maxWalk bounds the components one lookup may walk through symlink
// targets, beyond the name's own (which --max-path bounds). Rule: a lookup
// costs at most its name's length plus maxWalk steps, so a hostile chain
// of long symlink targets cannot turn millions of entries into a CPU bomb
// (test: "symlink walk bound"), while a deep name without symlinks is fine
// (test: "deep name"). Real lookups walk a few dozen.
const maxWalk = 1024

// nameMax is the longest name component Linux and ext4 accept (NAME_MAX).
const nameMax = 255

// cleanName turns a tar entry name (or hardlink target) into a clean absolute
// slash path inside the image. Rule: absolute names are relative to the image
// root and ".." never climbs above it, because the name is cleaned as if it
// were absolute (tests: "dotdot names", "absolute names", "hardlink up and
// out"). The result is "/" for the root itself.
func cleanName(name string) string {
	return path.Clean("/" + name)
}

// checkName validates a cleaned name's components. Rule: no NUL, no component
// over NAME_MAX (test: "long component").
func checkName(clean string) error {
	if strings.IndexByte(clean, 0) >= 0 {
		return malformed("name contains a NUL byte")
	}
	for _, c := range fstree.Split(clean) {
		if len(c) > nameMax {
			return malformed("name component of %d bytes is longer than the %d bytes a Linux filesystem allows", len(c), nameMax)
		}
	}
	return nil
}

// errNotFound is returned by lookups that do not create missing directories.
type notFoundError struct{ name string }

func (e *notFoundError) Error() string { return e.name + ": no such file or directory" }

// resolver walks names inside one tree. It never touches the host: the tree
// is in memory and the walk never leaves tree.Root.
type resolver struct {
	m *Merger
	// create makes missing directories (root-owned 0755) instead of failing.
	create bool
	// touch records every (directory, name) edge walked, for opaque markers.
	touch bool
}

// dir resolves the directory components comps (already cleaned: no "." or
// ".." left from the name itself) to a directory inode. Symlinks met on the
// way are followed inside the image. Rule: an absolute symlink target starts
// again at the image root; ".." pops one level and at the root stays at the
// root, like chroot (tests: "symlink absolute", "symlink up and out",
// "symlink multiple hops", "symlink to parent"). Rule: at most 40 symlinks per
// lookup (test: "symlink loop"). Rule: a component that is neither a
// directory nor a symlink is an error (test: "parent is a file").
func (r resolver) dir(comps []string) (*fstree.Inode, error) {
	root := r.m.tree.Root
	// Small fixed buffers keep the common lookup free of allocations.
	var stackBuf [16]*fstree.Inode
	var todoBuf, namesBuf [16]string
	stack := append(stackBuf[:0], root) // the current directory and its ancestors
	// todo holds the components still to walk, in reverse order, so that a
	// symlink's target can be pushed in front of the rest.
	todo := todoBuf[:0]
	for i := len(comps) - 1; i >= 0; i-- {
		todo = append(todo, comps[i])
	}
	names := namesBuf[:0] // names[i] is the name of stack[i+1], for messages
	where := func(name string) string {
		return path.Join(append(append([]string{"/"}, names...), name)...)
	}
	hops, steps := 0, 0
	for len(todo) > 0 {
		if steps++; steps > len(comps)+maxWalk {
			return nil, malformed("resolving the path walks more than %d components through symlinks", maxWalk)
		}
		name := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		cur := stack[len(stack)-1]
		switch name {
		case "", ".":
			continue
		case "..":
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
				names = names[:len(names)-1]
			}
			continue
		}
		child := cur.Child(name)
		if child == nil {
			if !r.create {
				return nil, &notFoundError{name: where(name)}
			}
			if err := r.m.countEntry(); err != nil {
				return nil, err
			}
			child = fstree.NewDir(0o755, 0, 0)
			fstree.Link(cur, name, child, r.m.release)
			r.m.stats.ImplicitDirs++
		}
		if r.touch {
			r.m.touch(cur, name)
		}
		switch child.Type {
		case fstree.TypeDir:
			stack = append(stack, child)
			names = append(names, name)
		case fstree.TypeSymlink:
			hops++
			if hops > maxSymlinkHops {
				return nil, malformed("too many levels of symbolic links at %s (more than %d)", shown(where(name)), maxSymlinkHops)
			}
			if child.Target == "" {
				return nil, malformed("%s is a symlink with an empty target, which cannot be used as a directory", shown(where(name)))
			}
			// Rule: a symlink target is cleaned lexically before it is
			// walked, as containerd's fs.RootPath does: ".." inside it
			// cancels the component before it whether or not that
			// exists; leading ".." climb from the symlink's directory
			// and stop at the root (test: "hardlink relative up and out").
			target := path.Clean(child.Target)
			if strings.HasPrefix(target, "/") {
				stack, names = stack[:1], names[:0]
			}
			tc := strings.Split(target, "/")
			for i := len(tc) - 1; i >= 0; i-- {
				todo = append(todo, tc[i])
			}
		default:
			return nil, malformed("%s is a %s, not a directory", shown(where(name)), child.Type)
		}
	}
	return stack[len(stack)-1], nil
}
