// Package confine resolves names inside a root directory the way a chroot
// does, over any tree that can list a directory's entry by name: the
// in-memory fstree (the layer merge, the runtime glue), the ext4 reader's
// on-disk directories and an archive's member index. It is the one place
// that decides where a name from an image (a tar entry, a hardlink target, a
// symlink target, a path Gondolin needs) leads, so every package follows the
// same rules:
//
//   - The name is cleaned lexically and starts at the root whether or not
//     it is absolute; ".." never climbs above the root (chroot semantics).
//   - Symlinks met on the way are followed inside the root: an absolute
//     target starts again at the root, a relative one at the symlink's
//     directory, and ".." in it stops at the root too. The final component
//     is followed only with Options.FollowLast (or Options.Dir).
//   - At most MaxHops symlinks per lookup (Linux's MAXSYMLINKS), and at most
//     the name's own components plus MaxWalk steps through symlink targets,
//     so a chain of long hostile targets costs bounded time however deep the
//     name itself is.
//   - A symlink with an empty target leads nowhere (Linux: ENOENT); a
//     component in the middle that is neither a directory nor a symlink is
//     ErrNotDir; a missing one is ErrNotExist unless Options.Create makes it.
//   - Errors name the real path walked, quoted by Quote (at most 256 bytes of
//     a possibly megabytes long hostile name).
//
// The models are containerd's fs.RootPath and umoci's securejoin.
package confine

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
)

// MaxHops is Linux's MAXSYMLINKS: a lookup that follows more symlinks fails
// with ErrLoop.
const MaxHops = 40

// MaxWalk bounds the components one lookup may walk through symlink
// targets, beyond the name's own (which the callers' own limits bound, e.g.
// rootfs's --max-path). Real lookups walk a few dozen.
const MaxWalk = 1024

// Kind is what an entry is, as far as resolving goes.
type Kind uint8

const (
	// Missing: no entry of that name.
	Missing Kind = iota
	// Dir: a directory, walked into.
	Dir
	// Symlink: followed in the middle of a name, and at its end with
	// Options.FollowLast.
	Symlink
	// Other: anything else (a file, a device); only the final component
	// may be one.
	Other
)

// FS is a tree of nodes N that Resolve walks. Implementations only look up
// one entry at a time; every rule lives in Resolve.
type FS[N any] interface {
	// Child returns the entry name of directory dir and its kind, or
	// Missing. name is never "", "." or "..". An error (a corrupt
	// directory) ends the walk and is returned as is.
	Child(dir N, name string) (N, Kind, error)
	// Target returns a symlink's target.
	Target(link N) (string, error)
	// Mkdir creates directory name in dir and returns it; path is the
	// real path it gets. It is called only with Options.Create, for a
	// missing name; a read-only FS returns an error.
	Mkdir(dir N, name, path string) (N, error)
	// Describe says what a node that is not a directory is ("file",
	// "fifo"), for messages.
	Describe(n N) string
}

// Options change how a name resolves.
type Options struct {
	// FollowLast follows a symlink in the final component (stat rather
	// than lstat).
	FollowLast bool
	// Dir requires the whole name to resolve to a directory, as a
	// trailing slash does: the final component is followed, must be a
	// directory, and is missing only as an error (or is made, with
	// Create). A name ending in "/" or "/." implies it.
	Dir bool
	// Create makes missing directories on the way with FS.Mkdir (and the
	// final component, with Dir) instead of failing with ErrNotExist.
	// Through a dangling symlink they are made where it points, inside
	// the root.
	Create bool
	// Lexical cleans a symlink target lexically before walking it, as
	// containerd's fs.RootPath does when it applies a layer: ".." cancels
	// the component before it whether or not that one exists or is a
	// symlink, and only leading ".." climb from the symlink's directory.
	// Without it ".." climbs from wherever the walk got to, as the kernel
	// resolves it (and umoci's securejoin): that is what a guest sees when
	// it boots, so code that asks "what will the guest find at this path"
	// must not set it.
	Lexical bool
	// Path fills Result.Path (one allocation; errors name the path
	// either way).
	Path bool
	// Links, when set, gets the real path of every symlink followed as the
	// final component appended, in order (the chain a library path walks,
	// e.g. libz.so.1 -> libz.so.1.2.13). It implies Path.
	Links *[]string
}

// Result is where a name led.
type Result[N any] struct {
	// Parent is the directory holding the entry; the zero N when the name
	// resolved to the root itself.
	Parent N
	// Name is the entry's name in Parent ("" for the root).
	Name string
	// Node is the entry; the zero N when Kind is Missing.
	Node N
	// Kind is the entry's kind, Missing when Parent has no entry Name
	// (only the final component can be missing without an error).
	Kind Kind
	// Path is the real absolute path of the entry, symlinks resolved
	// ("/" for the root), with Options.Path.
	Path string
}

// Errors wrapped by *Error. ErrNotExist and ErrEmptyTarget also match
// fs.ErrNotExist.
var (
	ErrNotExist    error = &sentinel{"no such file or directory", fs.ErrNotExist}
	ErrEmptyTarget error = &sentinel{"symlink with an empty target", fs.ErrNotExist}
	ErrNotDir            = errors.New("not a directory")
	ErrLoop              = errors.New("too many levels of symbolic links")
	ErrWalk              = errors.New("path walks too far through symlinks")
)

type sentinel struct {
	msg string
	is  error
}

func (s *sentinel) Error() string { return s.msg }
func (s *sentinel) Unwrap() error { return s.is }

// Error is a name that does not resolve. Err is one of ErrNotExist,
// ErrEmptyTarget, ErrNotDir, ErrLoop and ErrWalk.
type Error struct {
	Err error
	// Path is the real path of the entry at fault: the missing one, the
	// symlink, the non-directory.
	Path string
	// What is what the non-directory is (ErrNotDir).
	What string
	// AsDir: the empty symlink was to be walked as a directory.
	AsDir bool
}

func (e *Error) Error() string {
	switch e.Err {
	case ErrNotExist:
		return Quote(e.Path) + ": no such file or directory"
	case ErrNotDir:
		return fmt.Sprintf("%s is a %s, not a directory", Quote(e.Path), e.What)
	case ErrLoop:
		return fmt.Sprintf("too many levels of symbolic links at %s (more than %d)", Quote(e.Path), MaxHops)
	case ErrWalk:
		return fmt.Sprintf("resolving the path walks more than %d components through symlinks", MaxWalk)
	case ErrEmptyTarget:
		if e.AsDir {
			return Quote(e.Path) + " is a symlink with an empty target, which cannot be used as a directory"
		}
		return Quote(e.Path) + " is a symlink with an empty target, which leads nowhere"
	}
	return Quote(e.Path) + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// maxShown bounds the bytes of a name that Quote shows.
const maxShown = 256

// Quote quotes a name from an image for a message, cut to 256 bytes: a
// hostile name can be megabytes long.
func Quote(s string) string {
	if len(s) <= maxShown {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:maxShown]) + fmt.Sprintf("... (%d bytes)", len(s))
}

// Resolve resolves name from root in fsys under the package's rules.
//
// Long: one loop over the path's components, with link following, the hop
// count and the confinement check interleaved as a kernel's path walk does;
// split, its state would be passed between the pieces at every step.
func Resolve[N any, F FS[N]](fsys F, root N, name string, opts Options) (Result[N], error) {
	if strings.HasSuffix(name, "/") || strings.HasSuffix(name, "/.") {
		opts.Dir = true
	}
	if opts.Dir {
		opts.FollowLast = true
	}
	if opts.Links != nil {
		opts.Path = true
	}
	clean := strings.TrimLeft(path.Clean(name), "/")
	budget := MaxWalk + 1 + strings.Count(clean, "/")

	// Small fixed buffers keep the common lookup free of allocations.
	var stackBuf [16]N
	var namesBuf [16]string
	var todoBuf [8]string
	stack := append(stackBuf[:0], root) // the current directory and its ancestors
	names := namesBuf[:0]               // names[i] is the name of stack[i+1]
	// todo holds the text still to walk: the name's, and on top of it the
	// targets of the symlinks being followed, each consumed from the front.
	todo := append(todoBuf[:0], clean)
	where := func(name string) string {
		var b strings.Builder
		for _, n := range names {
			b.WriteString("/")
			b.WriteString(n)
		}
		if name != "" || len(names) == 0 {
			b.WriteString("/")
			b.WriteString(name)
		}
		return b.String()
	}
	here := func() (Result[N], error) {
		r := Result[N]{Node: stack[len(stack)-1], Kind: Dir}
		if len(stack) > 1 {
			r.Parent, r.Name = stack[len(stack)-2], names[len(names)-1]
		}
		if opts.Path {
			r.Path = where("")
		}
		return r, nil
	}
	hops, steps := 0, 0
	for len(todo) > 0 {
		top := todo[len(todo)-1]
		comp, rest, more := strings.Cut(top, "/")
		if more {
			if rest == "" {
				rest = "." // a trailing slash: comp must be a directory
			}
			todo[len(todo)-1] = rest
		} else {
			todo = todo[:len(todo)-1]
		}
		last := len(todo) == 0
		if steps++; steps > budget {
			return Result[N]{}, &Error{Err: ErrWalk, Path: where(comp)}
		}
		switch comp {
		case "", ".":
			if last {
				return here()
			}
			continue
		case "..":
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
				names = names[:len(names)-1]
			}
			if last {
				return here()
			}
			continue
		}
		cur := stack[len(stack)-1]
		child, kind, err := fsys.Child(cur, comp)
		if err != nil {
			return Result[N]{}, err
		}
		if kind == Missing {
			if last && !opts.Dir {
				r := Result[N]{Parent: cur, Name: comp}
				if opts.Path {
					r.Path = where(comp)
				}
				return r, nil
			}
			if !opts.Create {
				return Result[N]{}, &Error{Err: ErrNotExist, Path: where(comp)}
			}
			if child, err = fsys.Mkdir(cur, comp, where(comp)); err != nil {
				return Result[N]{}, err
			}
			kind = Dir
		}
		if kind == Symlink && (!last || opts.FollowLast) {
			if hops++; hops > MaxHops {
				return Result[N]{}, &Error{Err: ErrLoop, Path: where(comp)}
			}
			target, err := fsys.Target(child)
			if err != nil {
				return Result[N]{}, err
			}
			if target == "" {
				return Result[N]{}, &Error{Err: ErrEmptyTarget, Path: where(comp), AsDir: !last || opts.Dir}
			}
			if last && opts.Links != nil {
				*opts.Links = append(*opts.Links, where(comp))
			}
			if opts.Lexical {
				target = path.Clean(target)
			}
			if strings.HasPrefix(target, "/") {
				stack, names = stack[:1], names[:0]
				target = strings.TrimLeft(target, "/")
			}
			if target == "" { // a symlink to "/"
				target = "."
			}
			todo = append(todo, target)
			continue
		}
		if last {
			if opts.Dir && kind != Dir {
				return Result[N]{}, &Error{Err: ErrNotDir, Path: where(comp), What: fsys.Describe(child)}
			}
			r := Result[N]{Parent: cur, Name: comp, Node: child, Kind: kind}
			if opts.Path {
				r.Path = where(comp)
			}
			return r, nil
		}
		if kind != Dir {
			return Result[N]{}, &Error{Err: ErrNotDir, Path: where(comp), What: fsys.Describe(child)}
		}
		stack = append(stack, child)
		names = append(names, comp)
	}
	return here()
}
