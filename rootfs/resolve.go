package rootfs

import (
	"errors"
	"path"
	"strings"

	"github.com/docker2vm/docker2vm/fstree"
	"github.com/docker2vm/docker2vm/internal/confine"
)

// nameMax is the longest name component Linux and ext4 accept (NAME_MAX).
const nameMax = 255

// cleanName turns a tar entry name (or hardlink target) into a clean absolute
// slash path inside the image. Rule: absolute names are relative to the image
// root and ".." never climbs above it, because the name is cleaned as if it
// were absolute (tests: "dotdot names", "absolute names", "hardlink
// relative up and out"). The result is "/" for the root itself.
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

// walker is the merge's tree as confine.Resolve walks it: it makes the
// parent directories a layer omitted (root-owned 0755, counted against
// MaxEntries) and, with touch, records every (directory, name) edge walked,
// for opaque markers.
type walker struct {
	fstree.Entries
	m     *Merger
	touch bool
}

func (w walker) Child(dir *fstree.Inode, name string) (*fstree.Inode, confine.Kind, error) {
	c, k, err := w.Entries.Child(dir, name)
	if w.touch && k != confine.Missing {
		w.m.touch(dir, name)
	}
	return c, k, err
}

func (w walker) Mkdir(dir *fstree.Inode, name, _ string) (*fstree.Inode, error) {
	if err := w.m.countEntry(); err != nil {
		return nil, err
	}
	child := fstree.NewDir(0o755, 0, 0)
	child.Gen = w.m.gen
	fstree.Link(dir, strings.Clone(name), child, w.m.release)
	w.m.stats.ImplicitDirs++
	if w.touch {
		w.m.touch(dir, name)
	}
	return child, nil
}

// dir resolves dirPath, a cleaned absolute name, to a directory inside the
// image, making missing ones with create. The rules are confine's (package
// doc), with symlink targets cleaned lexically as containerd's fs.RootPath
// cleans them when it applies a layer (confine.Options.Lexical): an
// absolute symlink target starts again at the image root; ".." stops at
// the root, like chroot (tests: "symlink absolute", "symlink up and out",
// "symlink multiple absolute", "symlink multiple relative", "symlink to
// parent relative", "symlink to parent dir", "hardlink relative up and
// out"); at most 40 symlinks per lookup (test: "symlink loop"); a lookup
// costs at most its name's length plus 1024 steps through symlink targets,
// so a hostile chain of long targets cannot turn millions of entries into
// a CPU bomb (test: "symlink walk bound"), while a deep name without
// symlinks is fine (test: "deep name"); a component that is neither a
// directory nor a symlink is an error (test: "parent is a file"). A missing
// directory (without create) is an error matching confine.ErrNotExist.
func (m *Merger) dir(dirPath string, create, touch bool) (*fstree.Inode, error) {
	r, err := confine.Resolve(walker{m: m, touch: touch}, m.tree.Root, dirPath,
		confine.Options{Dir: true, Create: create, Lexical: true})
	if err == nil {
		return r.Node, nil
	}
	if errors.Is(err, confine.ErrNotExist) {
		return nil, err
	}
	if ce := (*confine.Error)(nil); errors.As(err, &ce) {
		return nil, &malformedError{msg: ce.Error()}
	}
	return nil, err // the store's or a limit's
}
