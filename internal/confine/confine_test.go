package confine

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"testing"
)

// node is one entry of the test tree.
type node struct {
	kind     Kind
	target   string
	children map[string]*node
	path     string // where it was made, for checks
}

// tree is a map-based FS. Lookups are counted, so tests can check that a
// walk is bounded; made records every directory Mkdir made.
type tree struct {
	root    *node
	lookups int
	made    []string
	nmade   int    // len(made), when made is not listed
	failAt  string // Child fails for this name
}

func (t *tree) Child(dir *node, name string) (*node, Kind, error) {
	t.lookups++
	if name == t.failAt {
		return nil, Missing, errors.New("corrupt directory")
	}
	c := dir.children[name]
	if c == nil {
		return nil, Missing, nil
	}
	return c, c.kind, nil
}

func (t *tree) Target(n *node) (string, error) { return n.target, nil }

func (t *tree) Mkdir(dir *node, name, path string) (*node, error) {
	if name == "readonly" {
		return nil, errors.New("read-only")
	}
	if want := strings.TrimSuffix(dir.path, "/") + "/" + name; path != want {
		return nil, fmt.Errorf("Mkdir(%s, %s) with path %s", dir.path, name, path)
	}
	d := &node{kind: Dir, children: map[string]*node{}, path: path}
	dir.children[name] = d
	t.made = append(t.made, d.path)
	return d, nil
}

func (t *tree) Describe(n *node) string { return "file" }

// build makes a tree from entries: "path" a directory, "path=" a file,
// "path->target" a symlink. Parents are made as directories.
func build(entries ...string) *tree {
	root := &node{kind: Dir, children: map[string]*node{}, path: "/"}
	for _, e := range entries {
		p, target, link := strings.Cut(e, "->")
		p, file := strings.CutSuffix(p, "=")
		dir := root
		parts := strings.Split(p, "/")
		for i, c := range parts {
			n := dir.children[c]
			if n == nil {
				n = &node{kind: Dir, children: map[string]*node{}, path: strings.TrimSuffix(dir.path, "/") + "/" + c}
				dir.children[c] = n
			}
			if i == len(parts)-1 {
				switch {
				case link:
					n.kind, n.target, n.children = Symlink, target, nil
				case file:
					n.kind, n.children = Other, nil
				}
			}
			dir = n
		}
	}
	return &tree{root: root}
}

// chain returns n symlinks l0 -> l1 -> ... -> l(n-1) -> target.
func chain(n int, target string) []string {
	var out []string
	for i := range n {
		next := target
		if i < n-1 {
			next = "l" + itoa(i+1)
		}
		out = append(out, "l"+itoa(i)+"->"+next)
	}
	return out
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

var etc = []string{"etc", "etc/passwd="}

func with(base []string, more ...string) []string { return append(slices.Clone(base), more...) }

type resolveCase struct {
	name    string
	tree    []string
	path    string
	opts    Options
	want    string // the real path found, "missing:" + path for a missing final entry
	kind    Kind   // the kind of the final entry (when found)
	err     error  // errors.Is
	msg     string // substring of the error message
	made    []string
	nmade   int      // len(made), when made is not listed
	links   []string // Options.Links
	lookups int      // at most this many Child calls (0: not checked)
}

func resolveCases() []resolveCase {
	deep := strings.Repeat("d/", 2000) + "f"
	hostile := []string{"a->" + strings.Repeat("../", 400) + "b", "b->" + strings.Repeat("../", 400) + "c",
		"c->" + strings.Repeat("../", 400) + "d", "d"}
	return []resolveCase{
		// Plain names.
		{name: "file", tree: etc, path: "/etc/passwd", want: "/etc/passwd", kind: Other},
		{name: "relative name starts at the root", tree: etc, path: "etc/passwd", want: "/etc/passwd", kind: Other},
		{name: "root", tree: etc, path: "/", want: "/", kind: Dir},
		{name: "empty name is the root", tree: etc, path: "", want: "/", kind: Dir},
		{name: "dotdot at root", tree: etc, path: "../../../etc/passwd", want: "/etc/passwd", kind: Other},
		{name: "dotdot alone", tree: etc, path: "..", want: "/", kind: Dir},
		{name: "dotdot in the name is lexical", tree: etc, path: "/nodir/../etc/passwd", want: "/etc/passwd", kind: Other},
		{name: "missing final", tree: etc, path: "/etc/shadow", want: "missing:/etc/shadow"},
		{name: "missing in the middle", tree: etc, path: "/nodir/x", err: ErrNotExist, msg: `"/nodir": no such file or directory`},
		{name: "missing is fs.ErrNotExist", tree: etc, path: "/nodir/x", err: fs.ErrNotExist},

		// Symlinks in the middle (containerd's TestBreakouts shapes).
		{name: "symlink absolute", tree: with(etc, "localetc->/etc"), path: "localetc/passwd", want: "/etc/passwd", kind: Other},
		{name: "symlink absolute up and out", tree: with(etc, "localetc->/../../../etc"), path: "localetc/passwd", want: "/etc/passwd", kind: Other},
		{name: "symlink relative up and out", tree: with(etc, "a/b->../../../etc"), path: "a/b/passwd", want: "/etc/passwd", kind: Other},
		{name: "symlink to root up and out", tree: with(etc, "foo->../../../../"), path: "foo/etc/passwd", want: "/etc/passwd", kind: Other},
		{name: "symlink multiple hops", tree: with(etc, "dummy/etc->/etc", "localetc->./dummy/etc"), path: "localetc/passwd", want: "/etc/passwd", kind: Other},
		{name: "symlink to parent", tree: []string{"a/b/up->..", "a/f="}, path: "a/b/up/f", want: "/a/f", kind: Other},
		{name: "symlink to itself as dot", tree: []string{"a/b/self->.", "a/b/g="}, path: "a/b/self/g", want: "/a/b/g", kind: Other},
		{name: "symlink target with trailing slash", tree: with(etc, "l->etc/"), path: "l/passwd", want: "/etc/passwd", kind: Other},
		{name: "symlink to a file with a trailing slash", tree: with(etc, "l->etc/passwd/"), path: "l", opts: Options{FollowLast: true}, err: ErrNotDir, msg: `"/etc/passwd" is a file`},
		{name: "40 hops", tree: with(etc, chain(40, "/etc")...), path: "l0/passwd", want: "/etc/passwd", kind: Other},
		{name: "41 hops", tree: with(etc, chain(41, "/etc")...), path: "l0/passwd", err: ErrLoop, msg: `too many levels of symbolic links at "/l40" (more than 40)`},
		{name: "symlink loop", tree: []string{"a->b", "b->a"}, path: "a/x", err: ErrLoop, msg: `too many levels of symbolic links at "/a" (more than 40)`},
		{name: "symlink loop as the final component", tree: []string{"a->b", "b->a"}, path: "a", opts: Options{FollowLast: true}, err: ErrLoop},
		{name: "symlink self loop", tree: []string{"a->a/."}, path: "a/x", err: ErrLoop},
		{name: "symlink walk bound", tree: hostile, path: "a/ok", err: ErrWalk, msg: "resolving the path walks more than 1024 components through symlinks", lookups: 1100},
		{name: "symlink walk bound lexical", tree: hostile, path: "a/ok", opts: Options{Lexical: true}, err: ErrWalk},
		{name: "empty target as a directory", tree: []string{"e->"}, path: "e/x", err: ErrEmptyTarget, msg: `"/e" is a symlink with an empty target, which cannot be used as a directory`},
		{name: "empty target followed", tree: []string{"e->"}, path: "e", opts: Options{FollowLast: true}, err: fs.ErrNotExist, msg: "leads nowhere"},
		{name: "empty target not followed", tree: []string{"e->"}, path: "e", want: "/e", kind: Symlink},
		{name: "dangling symlink in the middle", tree: []string{"l->/dne/x"}, path: "l/f", err: ErrNotExist, msg: `"/dne"`},
		{name: "dangling symlink final followed", tree: []string{"d", "l->/d/x"}, path: "l", opts: Options{FollowLast: true}, want: "missing:/d/x"},

		// The final component.
		{name: "final symlink not followed", tree: with(etc, "l->etc"), path: "l", want: "/l", kind: Symlink},
		{name: "final symlink followed", tree: with(etc, "l->etc"), path: "l", opts: Options{FollowLast: true}, want: "/etc", kind: Dir},
		{name: "final symlink to root", tree: with(etc, "l->/"), path: "l", opts: Options{FollowLast: true}, want: "/", kind: Dir},
		{name: "final symlink to parent", tree: []string{"a/b/up->.."}, path: "a/b/up", opts: Options{FollowLast: true}, want: "/a", kind: Dir},
		{name: "trailing slash follows", tree: with(etc, "l->etc"), path: "l/", want: "/etc", kind: Dir},
		{name: "trailing slash dot follows", tree: with(etc, "l->etc"), path: "l/.", want: "/etc", kind: Dir},
		{name: "trailing slash on a file", tree: etc, path: "etc/passwd/", err: ErrNotDir, msg: `"/etc/passwd" is a file, not a directory`},
		{name: "trailing slash on a missing name", tree: etc, path: "etc/x/", err: ErrNotExist},
		{name: "Dir on a symlink to a file", tree: with(etc, "l->etc/passwd"), path: "l", opts: Options{Dir: true}, err: ErrNotDir, msg: `"/etc/passwd"`},
		{name: "links of the final component", tree: []string{"lib/real=", "l1->l2", "l2->/lib/real", "x->lib"}, path: "x/../l1", opts: Options{FollowLast: true, Links: new([]string)},
			want: "/lib/real", kind: Other, links: []string{"/l1", "/l2"}},
		{name: "links skip middle hops", tree: []string{"lib/real=", "lib/so->real", "x->lib"}, path: "x/so", opts: Options{FollowLast: true, Links: new([]string)},
			want: "/lib/real", kind: Other, links: []string{"/lib/so"}},

		// Non-directories in the middle.
		{name: "parent is a file", tree: []string{"f="}, path: "f/g", err: ErrNotDir, msg: `"/f" is a file, not a directory`},
		{name: "parent is a symlink to a file", tree: []string{"d/f=", "l->d/f"}, path: "l/g", err: ErrNotDir, msg: `"/d/f" is a file`},

		// Lexical and kernel semantics of ".." in a target.
		{name: "dotdot after a missing component, lexical", tree: with(etc, "l->nodir/../etc"), path: "l/passwd", opts: Options{Lexical: true}, want: "/etc/passwd", kind: Other},
		{name: "dotdot after a missing component, kernel", tree: with(etc, "l->nodir/../etc"), path: "l/passwd", err: ErrNotExist, msg: `"/nodir"`},
		{name: "dotdot after a symlink, lexical", tree: []string{"a/b", "a/y=", "y=", "s->a/b", "l->s/../y"}, path: "l", opts: Options{FollowLast: true, Lexical: true}, want: "/y", kind: Other},
		{name: "dotdot after a symlink, kernel", tree: []string{"a/b", "a/y=", "y=", "s->a/b", "l->s/../y"}, path: "l", opts: Options{FollowLast: true}, want: "/a/y", kind: Other},

		// Deep names cost their length, not more.
		{name: "deep name", tree: []string{deep + "="}, path: deep, want: "/" + deep, kind: Other},
		{name: "deep name created", tree: nil, path: deep, opts: Options{Create: true}, want: "missing:/" + deep, nmade: 2000},

		// Create.
		{name: "create the middle, not the final", tree: nil, path: "a/b/c", opts: Options{Create: true}, want: "missing:/a/b/c", made: []string{"/a", "/a/b"}},
		{name: "create with Dir makes the final too", tree: nil, path: "a/b", opts: Options{Create: true, Dir: true}, want: "/a/b", kind: Dir, made: []string{"/a", "/a/b"}},
		{name: "create through a dangling symlink stays inside", tree: []string{"l->../../../dne/x"}, path: "l/f", opts: Options{Create: true},
			want: "missing:/dne/x/f", made: []string{"/dne", "/dne/x"}},
		{name: "create through an absolute dangling symlink", tree: []string{"l->/../dne"}, path: "l", opts: Options{Create: true, Dir: true},
			want: "/dne", kind: Dir, made: []string{"/dne"}},
		{name: "create error", tree: nil, path: "readonly/x", opts: Options{Create: true}, msg: "read-only"},
		{name: "create does not pass a file", tree: []string{"f="}, path: "f/x/y", opts: Options{Create: true}, err: ErrNotDir},

		// Errors from the FS and long names.
		{name: "lookup error", tree: etc, path: "etc/bad/x", msg: "corrupt directory"},
		{name: "long name is quoted short", tree: nil, path: strings.Repeat("x", 100000) + "/y", err: ErrNotExist, msg: `... (100001 bytes): no such file or directory`},
	}
}

func TestResolve(t *testing.T) {
	for _, tc := range resolveCases() {
		t.Run(tc.name, func(t *testing.T) {
			tr := build(tc.tree...)
			tr.failAt = "bad"
			opts := tc.opts
			opts.Path = true
			r, err := Resolve(tr, tr.root, tc.path, opts)
			if tc.err != nil || tc.msg != "" && tc.want == "" {
				if err == nil {
					t.Fatalf("got %s (kind %d), want an error", r.Path, r.Kind)
				}
				if tc.err != nil && !errors.Is(err, tc.err) {
					t.Errorf("error %v, want %v", err, tc.err)
				}
				if !strings.Contains(err.Error(), tc.msg) {
					t.Errorf("error %q, want it to contain %q", err, tc.msg)
				}
				if len(err.Error()) > 1000 {
					t.Errorf("error of %d bytes", len(err.Error()))
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				got := r.Path
				if r.Kind == Missing {
					got = "missing:" + got
				}
				if got != tc.want || r.Kind != tc.kind {
					t.Errorf("got %s (kind %d), want %s (kind %d)", got, r.Kind, tc.want, tc.kind)
				}
				checkResult(t, tr, r)
			}
			if tc.lookups > 0 && tr.lookups > tc.lookups {
				t.Errorf("%d lookups, want at most %d", tr.lookups, tc.lookups)
			}
			if tc.nmade > 0 {
				if len(tr.made) != tc.nmade {
					t.Errorf("made %d directories, want %d", len(tr.made), tc.nmade)
				}
			} else if !slices.Equal(tr.made, tc.made) {
				t.Errorf("made %v, want %v", tr.made, tc.made)
			}
			if tc.links != nil && !slices.Equal(*opts.Links, tc.links) {
				t.Errorf("links %v, want %v", *opts.Links, tc.links)
			}
		})
	}
}

// checkResult checks that Parent, Name and Node agree with Path.
func checkResult(t *testing.T, tr *tree, r Result[*node]) {
	t.Helper()
	if r.Path == "/" {
		if r.Parent != nil || r.Name != "" || r.Node != tr.root {
			t.Errorf("root result %+v", r)
		}
		return
	}
	if r.Parent == nil || r.Parent.children[r.Name] != r.Node {
		t.Errorf("Parent does not hold Node as %q", r.Name)
	}
	if want := strings.TrimSuffix(r.Parent.path, "/") + "/" + r.Name; want != r.Path {
		t.Errorf("Path %s, but Parent is %s and Name %q", r.Path, r.Parent.path, r.Name)
	}
	if r.Node != nil && r.Node.path != r.Path {
		t.Errorf("Node is %s, Path %s", r.Node.path, r.Path)
	}
}

// TestResolveWithoutPath: Path stays empty unless asked for; errors still
// name the real path.
func TestResolveWithoutPath(t *testing.T) {
	tr := build(with(etc, "l->etc")...)
	r, err := Resolve(tr, tr.root, "l/passwd", Options{})
	if err != nil || r.Path != "" || r.Kind != Other || r.Name != "passwd" {
		t.Fatalf("%+v %v", r, err)
	}
	_, err = Resolve(tr, tr.root, "l/passwd/x", Options{})
	if err == nil || !strings.Contains(err.Error(), `"/etc/passwd" is a file`) {
		t.Fatal(err)
	}
}

// TestResolveAllocations: the common lookup (a few components, a symlink
// or two) allocates nothing.
func TestResolveAllocations(t *testing.T) {
	tr := build(with(etc, "usr/lib/x86_64-linux-gnu/libc.so.6=", "lib->usr/lib", "bin->usr/bin", "usr/bin")...)
	for _, name := range []string{"/usr/lib/x86_64-linux-gnu/", "lib/x86_64-linux-gnu/libc.so.6", "/etc/passwd"} {
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := Resolve(tr, tr.root, name, Options{Dir: strings.HasSuffix(name, "/")}); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per lookup", name, allocs)
		}
	}
}

func TestQuote(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"a", `"a"`},
		{"a\nb", `"a\nb"`},
		{strings.Repeat("x", 256), `"` + strings.Repeat("x", 256) + `"`},
		{strings.Repeat("x", 300), `"` + strings.Repeat("x", 256) + `"... (300 bytes)`},
	} {
		if got := Quote(tc.in); got != tc.want {
			t.Errorf("Quote(%d bytes) = %s", len(tc.in), got)
		}
	}
}
