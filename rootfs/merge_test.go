package rootfs

import (
	"archive/tar"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/docker2vm/docker2vm/internal/testtar"
)

type mergeCase struct {
	name   string
	layers [][]ent
	lim    Limits
	want   string // dump listing (see dump); ignored when err is set
	err    string // substring of the expected error
}

// etc is the usual base: /etc (0770) holding passwd.
var etc = []ent{D("etc").Mode(0o770), F("etc/passwd", "inside")}

func with(base []ent, more ...ent) []ent {
	return append(append([]ent{}, base...), more...)
}

func runCases(t *testing.T, cases []mergeCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var layers [][]byte
			for _, l := range tc.layers {
				layers = append(layers, testtar.Build(t, l...))
			}
			m, st, err := merge(t, tc.lim, layers...)
			if tc.err != "" {
				if err == nil {
					t.Fatalf("want error containing %q, got none; tree:\n%s", tc.err, dump(m.Tree()))
				}
				if !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("want error containing %q, got: %v", tc.err, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if got, want := dump(m.Tree()), lines(tc.want); got != want {
				t.Errorf("tree mismatch\ngot:\n%s\nwant:\n%s", got, want)
			}
			checkInvariants(t, m.Tree(), st)
			for k := 1; k < len(layers); k++ {
				resumed := resumeAt(t, tc.lim, k, layers...)
				if got, want := dump(resumed.Tree()), dump(m.Tree()); got != want || resumed.Stats() != m.Stats() {
					t.Errorf("resumed after layer %d: %+v\n%s\nuninterrupted: %+v\n%s", k, resumed.Stats(), got, m.Stats(), want)
				}
			}
			if r := m.Tree().Root; r.Mode != 0o755 || r.UID != 0 || r.GID != 0 || len(r.Xattrs) != 0 {
				t.Errorf("root metadata changed: %04o %d:%d %v", r.Mode, r.UID, r.GID, r.Xattrs)
			}
		})
	}
}

// symlinkCases cover symlinks in parent components and symlinks replacing
// or replaced by directories (containerd's TestBreakouts symlink cases).
func symlinkCases() []mergeCase {
	return []mergeCase{
		{name: "symlink absolute", layers: [][]ent{{D("etc"), S("localetc", "/etc"), F("/localetc/unbroken", "unbroken")}},
			want: `
/etc dir 0755 0:0
/etc/unbroken file 0644 0:0 "unbroken"
/localetc symlink 0777 0:0 -> "/etc"`},
		{name: "symlink up and out", layers: [][]ent{{D("etc"), D("dummy"), S("localetc", "/dummy/../etc"), F("/localetc/unbroken", "unbroken")}},
			want: `
/dummy dir 0755 0:0
/etc dir 0755 0:0
/etc/unbroken file 0644 0:0 "unbroken"
/localetc symlink 0777 0:0 -> "/dummy/../etc"`},
		{name: "symlink relative up and out of root", layers: [][]ent{{D("a"), S("a/b", "../../../etc"), F("a/b/f", "f"), S("foo", "../../../../"), F("foo/x", "x")}},
			want: `
/a dir 0755 0:0
/a/b symlink 0777 0:0 -> "../../../etc"
/etc dir 0755 0:0 mtime=0.000000000
/etc/f file 0644 0:0 "f"
/foo symlink 0777 0:0 -> "../../../../"
/x file 0644 0:0 "x"`},
		{name: "symlink multiple absolute", layers: [][]ent{{D("etc"), D("dummy"), S("/dummy/etc", "/etc"), S("localetc", "/dummy/etc"), F("/localetc/unbroken", "unbroken")}},
			want: `
/dummy dir 0755 0:0
/dummy/etc symlink 0777 0:0 -> "/etc"
/etc dir 0755 0:0
/etc/unbroken file 0644 0:0 "unbroken"
/localetc symlink 0777 0:0 -> "/dummy/etc"`},
		{name: "symlink multiple relative", layers: [][]ent{{D("etc"), D("dummy"), S("/dummy/etc", "/etc"), S("localetc", "./dummy/etc"), F("/localetc/unbroken", "unbroken")}},
			want: `
/dummy dir 0755 0:0
/dummy/etc symlink 0777 0:0 -> "/etc"
/etc dir 0755 0:0
/etc/unbroken file 0644 0:0 "unbroken"
/localetc symlink 0777 0:0 -> "./dummy/etc"`},
		{name: "symlink empty file", layers: [][]ent{{D("etc"), F("etc/emptied", "notempty"), S("localetc", "/etc"), F("/localetc/emptied", "")}},
			want: `
/etc dir 0755 0:0
/etc/emptied file 0644 0:0 ""
/localetc symlink 0777 0:0 -> "/etc"`},
		{name: "symlink named .. is ignored", layers: [][]ent{with(etc, S("..", "/etc/"), L("localpasswd", "/etc/passwd"))},
			want: `
/etc dir 0770 0:0
/etc/passwd file 0644 0:0 "inside" ino=1
/localpasswd file 0644 0:0 "inside" ino=1`},
		{name: "symlink empty filename is ignored", layers: [][]ent{with(etc, S("", "/etc/"), L("localpasswd", "/etc/passwd"))},
			want: `
/etc dir 0770 0:0
/etc/passwd file 0644 0:0 "inside" ino=1
/localpasswd file 0644 0:0 "inside" ino=1`},
		{name: "symlink to parent relative", layers: [][]ent{with(etc, S("localetc/sub/..", "/etc/"), L("/localetc/localpasswd", "/etc/passwd"))},
			want: `
/etc dir 0770 0:0
/etc/localpasswd file 0644 0:0 "inside" ino=1
/etc/passwd file 0644 0:0 "inside" ino=1
/localetc symlink 0777 0:0 -> "/etc/"`},
		{name: "symlink to parent dir", layers: [][]ent{{D("a/b"), S("a/b/up", ".."), F("a/b/up/f", "f"), S("a/b/self", "."), F("a/b/self/g", "g")}},
			want: `
/a dir 0755 0:0 mtime=0.000000000
/a/b dir 0755 0:0
/a/b/g file 0644 0:0 "g"
/a/b/self symlink 0777 0:0 -> "."
/a/b/up symlink 0777 0:0 -> ".."
/a/f file 0644 0:0 "f"`},
		{name: "symlink slash ended", layers: [][]ent{with(etc, D("localetc/"), L("/localetc/localpasswd", "/etc/passwd"), S("l/", "etc/"), F("l/f", "f"))},
			want: `
/etc dir 0770 0:0
/etc/f file 0644 0:0 "f"
/etc/passwd file 0644 0:0 "inside" ino=1
/l symlink 0777 0:0 -> "etc/"
/localetc dir 0755 0:0
/localetc/localpasswd file 0644 0:0 "inside" ino=1`},
		{name: "symlink override directory", layers: [][]ent{with(etc, D("localetc"), F("localetc/old", "old")), {S("localetc", "/etc"), L("/localetc/localpasswd", "/etc/passwd")}},
			want: `
/etc dir 0770 0:0
/etc/localpasswd file 0644 0:0 "inside" ino=1
/etc/passwd file 0644 0:0 "inside" ino=1
/localetc symlink 0777 0:0 -> "/etc"`},
		{name: "symlink override directory relative", layers: [][]ent{with(etc, D("localetc")), {S("localetc", "../../etc"), L("/localetc/localpasswd", "/etc/passwd")}},
			want: `
/etc dir 0770 0:0
/etc/localpasswd file 0644 0:0 "inside" ino=1
/etc/passwd file 0644 0:0 "inside" ino=1
/localetc symlink 0777 0:0 -> "../../etc"`},
		{name: "directory override symlink", layers: [][]ent{with(etc, S("localetc", "/etc")), {D("/localetc/"), L("/localetc/localpasswd", "/etc/passwd")}},
			want: `
/etc dir 0770 0:0
/etc/passwd file 0644 0:0 "inside" ino=1
/localetc dir 0755 0:0
/localetc/localpasswd file 0644 0:0 "inside" ino=1`},
		{name: "directory override symlink and hardlink", layers: [][]ent{
			with(etc, S("localetc", "etc"), L("/localetc/localpasswd", "/etc/passwd")),
			{D("/localetc/"), F("/localetc/localpasswd", "different")}},
			want: `
/etc dir 0770 0:0
/etc/localpasswd file 0644 0:0 "inside" ino=1
/etc/passwd file 0644 0:0 "inside" ino=1
/localetc dir 0755 0:0
/localetc/localpasswd file 0644 0:0 "different"`},
		{name: "symlink override path", layers: [][]ent{{
			D("foo"), D("foo/tmp"), F("foo/tmp/breakout", "012"),
			S("foo", "/"), F("foo/tmp/breakout", "345"),
			D("foo"), D("foo/tmp"), F("foo/tmp/breakout", "678")}},
			want: `
/foo dir 0755 0:0
/foo/tmp dir 0755 0:0
/foo/tmp/breakout file 0644 0:0 "678"
/tmp dir 0755 0:0 mtime=0.000000000
/tmp/breakout file 0644 0:0 "345"`},
		{name: "later layer writes through symlinked dir", layers: [][]ent{{D("usr/lib"), S("lib", "usr/lib")}, {F("lib/x", "x")}},
			want: `
/lib symlink 0777 0:0 -> "usr/lib"
/usr dir 0755 0:0 mtime=0.000000000
/usr/lib dir 0755 0:0
/usr/lib/x file 0644 0:0 "x"`},
		{name: "symlink replaces directory subtree", layers: [][]ent{{D("a"), F("a/f", "f"), D("a/s"), F("a/s/g", "g")}, {S("a", "b")}},
			want: `/a symlink 0777 0:0 -> "b"`},
		{name: "directory replaces symlink", layers: [][]ent{{D("etc"), S("a", "/etc")}, {D("a").Mode(0o700)}},
			want: `
/a dir 0700 0:0
/etc dir 0755 0:0`},
		{name: "file replaces symlink not its target", layers: [][]ent{with(etc, S("p", "etc/passwd")), {F("p", "new")}},
			want: `
/etc dir 0770 0:0
/etc/passwd file 0644 0:0 "inside"
/p file 0644 0:0 "new"`},
		{name: "dangling symlink parent creates inside image", layers: [][]ent{{S("l", "/dne/x"), F("l/f", "f")}},
			want: `
/dne dir 0755 0:0 mtime=0.000000000
/dne/x dir 0755 0:0 mtime=0.000000000
/dne/x/f file 0644 0:0 "f"
/l symlink 0777 0:0 -> "/dne/x"`},
		{name: "symlink loop", layers: [][]ent{{S("a", "b"), S("b", "a"), F("a/x", "")}},
			err: `layer 1: entry "a/x": too many levels of symbolic links at "/a" (more than 40): the image is malformed or hostile`},
		{name: "symlink self loop", layers: [][]ent{{S("a", "a/."), F("a/x", "")}},
			err: `too many levels of symbolic links`},
		{name: "deep name", layers: [][]ent{{F(strings.Repeat("d/", 2040)+"f", "deep")}},
			want: deepTree(2040)},
		{name: "symlink walk bound", layers: [][]ent{{S("a", strings.Repeat("../", 400)+"b"), S("b", strings.Repeat("../", 400)+"c"), S("c", strings.Repeat("../", 400)+"d"), D("d"), F("a/ok", "")}},
			err: `entry "a/ok": resolving the path walks more than 1024 components through symlinks`},
		{name: "symlink empty target as parent", layers: [][]ent{{S("e", ""), F("e/x", "")}},
			err: `entry "e/x": "/e" is a symlink with an empty target, which cannot be used as a directory`},
		{name: "parent is a file", layers: [][]ent{{F("f", "x"), F("f/g", "")}},
			err: `entry "f/g": "/f" is a file, not a directory: the image is malformed or hostile`},
		{name: "parent is a symlink to a file", layers: [][]ent{{D("d"), F("d/f", "x"), S("l", "d/f"), F("l/g", "")}},
			err: `entry "l/g": "/d/f" is a file, not a directory`},
	}
}

func TestSymlinks(t *testing.T) { runCases(t, symlinkCases()) }

// hardlinkCases cover hardlink resolution (containerd's Hardlink* cases)
// and hardlink identity across layers.
func hardlinkCases() []mergeCase {
	twoNames := func(a, b string) string {
		lines := []string{
			a + ` file 0644 0:0 "inside" ino=1`,
			b + ` file 0644 0:0 "inside" ino=1`,
		}
		return strings.Join(lines, "\n")
	}
	return []mergeCase{
		{name: "hardlink relative", layers: [][]ent{with(etc, D("breakouts"), S("breakouts/d1", "../../etc"), L("breakouts/mypasswd", "/breakouts/d1/passwd"))},
			want: `
/breakouts dir 0755 0:0
/breakouts/d1 symlink 0777 0:0 -> "../../etc"
/breakouts/mypasswd file 0644 0:0 "inside" ino=1
/etc dir 0770 0:0
/etc/passwd file 0644 0:0 "inside" ino=1`},
		{name: "hardlink down and out", layers: [][]ent{with(etc, D("breakouts"), D("downandout"), S("breakouts/d1", "../downandout/../../etc"), L("breakouts/mypasswd", "/breakouts/d1/passwd"))},
			want: `
/breakouts dir 0755 0:0
/breakouts/d1 symlink 0777 0:0 -> "../downandout/../../etc"
/breakouts/mypasswd file 0644 0:0 "inside" ino=1
/downandout dir 0755 0:0
/etc dir 0770 0:0
/etc/passwd file 0644 0:0 "inside" ino=1`},
		{name: "hardlink absolute", layers: [][]ent{with(etc, S("localetc", "/etc"), L("localpasswd", "/localetc/passwd"))},
			want: "/etc dir 0770 0:0\n" + twoNames("/etc/passwd", `/localetc symlink 0777 0:0 -> "/etc"`+"\n/localpasswd")},
		{name: "hardlink relative long", layers: [][]ent{with(etc, S("localetc", "../../../../../../../etc"), L("localpasswd", "/localetc/passwd"))},
			want: "/etc dir 0770 0:0\n" + twoNames("/etc/passwd", `/localetc symlink 0777 0:0 -> "../../../../../../../etc"`+"\n/localpasswd")},
		{name: "hardlink relative up and out", layers: [][]ent{with(etc, S("localetc", "upandout/../../../etc"), L("localpasswd", "/localetc/passwd"))},
			want: "/etc dir 0770 0:0\n" + twoNames("/etc/passwd", `/localetc symlink 0777 0:0 -> "upandout/../../../etc"`+"\n/localpasswd")},
		{name: "hardlink direct relative", layers: [][]ent{with(etc, L("localpasswd", "../../../../../etc/passwd"))},
			want: "/etc dir 0770 0:0\n" + twoNames("/etc/passwd", "/localpasswd")},
		{name: "hardlink direct absolute", layers: [][]ent{with(etc, L("localpasswd", "/etc/passwd"))},
			want: "/etc dir 0770 0:0\n" + twoNames("/etc/passwd", "/localpasswd")},
		{name: "hardlink to symlink before its target", layers: [][]ent{{D("etc").Mode(0o770), S("localpasswd", "/etc/passwd"), L("localpasswd-dup", "localpasswd"), F("/etc/passwd", "after")}},
			want: `
/etc dir 0770 0:0
/etc/passwd file 0644 0:0 "after"
/localpasswd symlink 0777 0:0 -> "/etc/passwd" ino=1
/localpasswd-dup symlink 0777 0:0 -> "/etc/passwd" ino=1`},
		{name: "hardlink to symlink relative", layers: [][]ent{with(etc, S("passwdlink", "../../../../../etc/passwd"), L("/localpasswd", "/passwdlink"))},
			want: `
/etc dir 0770 0:0
/etc/passwd file 0644 0:0 "inside"
/localpasswd symlink 0777 0:0 -> "../../../../../etc/passwd" ino=1
/passwdlink symlink 0777 0:0 -> "../../../../../etc/passwd" ino=1`},
		{name: "hardlink created before its target", layers: [][]ent{{L("a", "b"), F("b", "x")}},
			err: `layer 1: entry "a": hardlink target "b" does not exist at this point of the image`},
		{name: "hardlink target parent missing", layers: [][]ent{{L("a", "nodir/b")}},
			err: `entry "a": hardlink target "nodir/b" does not exist`},
		{name: "hardlink target overwritten in later layer", layers: [][]ent{{F("a", "old"), L("b", "a")}, {F("a", "new")}},
			want: `
/a file 0644 0:0 "new"
/b file 0644 0:0 "old"`},
		{name: "hardlink target whited out in later layer", layers: [][]ent{{F("a", "old"), L("b", "a")}, {W("a")}},
			want: `/b file 0644 0:0 "old"`},
		{name: "hardlink to lower layer", layers: [][]ent{{F("a", "x")}, {L("b", "a")}},
			want: `
/a file 0644 0:0 "x" ino=1
/b file 0644 0:0 "x" ino=1`},
		{name: "hardlink to directory", layers: [][]ent{{D("d"), L("x", "d")}},
			err: `entry "x": hardlink target "d" is a directory: the image is malformed or hostile`},
		{name: "hardlink to root", layers: [][]ent{{L("x", "..")}},
			err: `entry "x": hardlink to ".." names the root directory`},
		{name: "hardlink replaces the directory holding its target", layers: [][]ent{{D("d"), F("d/f", "data"), L("d", "d/f")}},
			want: `/d file 0644 0:0 "data"`},
		{name: "hardlink to itself", layers: [][]ent{{F("a", "x"), L("a", "a")}},
			want: `/a file 0644 0:0 "x"`},
		{name: "overwrite one name of a hardlinked pair", layers: [][]ent{{F("a", "1"), L("b", "a"), F("b", "2")}},
			want: `
/a file 0644 0:0 "1"
/b file 0644 0:0 "2"`},
		{name: "hardlink header metadata ignored", layers: [][]ent{{F("a", "x").Owner(1, 1), L("b", "a").Owner(5, 5).Mode(0o600)}},
			want: `
/a file 0644 1:1 "x" ino=1
/b file 0644 1:1 "x" ino=1`},
		{name: "hardlink to device and fifo", layers: [][]ent{{Dev('c', "null", 1, 3), L("null2", "null"), Dev('p', "p", 0, 0), L("p2", "p")}},
			want: `
/null chardev 0666 0:0 1:3 ino=1
/null2 chardev 0666 0:0 1:3 ino=1
/p fifo 0666 0:0 ino=2
/p2 fifo 0666 0:0 ino=2`},
	}
}

func TestHardlinks(t *testing.T) { runCases(t, hardlinkCases()) }

// whiteoutCases cover whiteouts and opaque markers (containerd's Whiteout*
// cases and the OCI layer spec).
func whiteoutCases() []mergeCase {
	lower := with(etc, F("etc/whitedout", "ahhhh"), S("localetc", "/etc"))
	opqLower := []ent{D("a"), F("a/old", "o"), D("a/sub").Mode(0o700), F("a/sub/old2", "o2"), F("keep", "k")}
	return []mergeCase{
		{name: "whiteout root parent", layers: [][]ent{etc, {F(".wh...", "")}},
			err: `layer 2: entry ".wh...": whiteout ".wh..." does not name an entry of its directory: the image is malformed or hostile`},
		{name: "whiteout parent", layers: [][]ent{etc, {F("etc/.wh...", "")}},
			err: `entry "etc/.wh...": whiteout ".wh..." does not name an entry of its directory`},
		{name: "whiteout root", layers: [][]ent{etc, {F(".wh..", "")}},
			err: `whiteout ".wh.." does not name an entry of its directory`},
		{name: "whiteout current directory", layers: [][]ent{etc, {F("etc/.wh..", "")}},
			err: `entry "etc/.wh..": whiteout ".wh.." does not name`},
		{name: "whiteout empty name", layers: [][]ent{etc, {F("etc/.wh.", "")}},
			err: `whiteout ".wh." does not name`},
		{name: "whiteout symlink", layers: [][]ent{lower, {W("localetc")}},
			want: `
/etc dir 0770 0:0
/etc/passwd file 0644 0:0 "inside"
/etc/whitedout file 0644 0:0 "ahhhh"`},
		{name: "whiteout through symlink path", layers: [][]ent{lower, {W("localetc/whitedout")}},
			want: `
/etc dir 0770 0:0
/etc/passwd file 0644 0:0 "inside"
/localetc symlink 0777 0:0 -> "/etc"`},
		{name: "whiteout directory name is a plain name", layers: [][]ent{lower, {F(".wh.etc/somefile", "non-empty")}},
			want: `
/.wh.etc dir 0755 0:0 mtime=0.000000000
/.wh.etc/somefile file 0644 0:0 "non-empty"
/etc dir 0770 0:0
/etc/passwd file 0644 0:0 "inside"
/etc/whitedout file 0644 0:0 "ahhhh"
/localetc symlink 0777 0:0 -> "/etc"`},
		{name: "whiteout dead symlink parent", layers: [][]ent{with(etc, S("localetc", "/dne")), {W("localetc/etc")}},
			want: `
/etc dir 0770 0:0
/etc/passwd file 0644 0:0 "inside"
/localetc symlink 0777 0:0 -> "/dne"`},
		{name: "whiteout relative path", layers: [][]ent{with(etc, S("localetc", "/dne")), {W("dne/../etc")}},
			want: `/localetc symlink 0777 0:0 -> "/dne"`},
		{name: "whiteout missing name is a no-op", layers: [][]ent{etc, {W("nothere"), W("etc/nothere"), W("nodir/x"), W("nodir/sub/x")}},
			want: `
/etc dir 0770 0:0
/etc/passwd file 0644 0:0 "inside"`},
		{name: "whiteout directory removes subtree", layers: [][]ent{{D("d"), F("d/f", "f"), D("d/s"), F("d/s/g", "g"), F("x", "x")}, {W("d")}},
			want: `/x file 0644 0:0 "x"`},
		{name: "whiteout below a file", layers: [][]ent{etc, {W("etc/passwd/x")}},
			err: `entry "etc/passwd/.wh.x": "/etc/passwd" is a file, not a directory`},
		{name: "whiteout any type", layers: [][]ent{{F("a", "a"), F("b", "b"), F("c", "c")}, {D(".wh.a"), S(".wh.b", "x"), Dev('p', ".wh.c", 0, 0)}},
			want: ``},
		{name: "whiteout keeps entries of its own layer", layers: [][]ent{{D("d"), F("d/old", "o"), F("f", "lower")}, {F("d/new", "n"), W("d"), F("f", "upper"), W("f")}},
			want: `
/d dir 0755 0:0
/d/new file 0644 0:0 "n"
/f file 0644 0:0 "upper"`},
		{name: "whiteout before entries of its own layer", layers: [][]ent{{D("d"), F("d/old", "o"), F("f", "lower")}, {W("d"), F("d/new", "n"), W("f"), F("f", "upper")}},
			want: `
/d dir 0755 0:0 mtime=0.000000000
/d/new file 0644 0:0 "n"
/f file 0644 0:0 "upper"`},
		{name: "opaque before entries", layers: [][]ent{opqLower, {D("a"), Opq("a"), F("a/new", "n")}},
			want: `
/a dir 0755 0:0
/a/new file 0644 0:0 "n"
/keep file 0644 0:0 "k"`},
		{name: "opaque after entries", layers: [][]ent{opqLower, {D("a"), F("a/new", "n"), Opq("a")}},
			want: `
/a dir 0755 0:0
/a/new file 0644 0:0 "n"
/keep file 0644 0:0 "k"`},
		{name: "opaque keeps implicit parent but hides its lower children", layers: [][]ent{opqLower, {F("a/sub/new", "n"), Opq("a")}},
			want: `
/a dir 0755 0:0
/a/sub dir 0700 0:0
/a/sub/new file 0644 0:0 "n"
/keep file 0644 0:0 "k"`},
		{name: "opaque hides lower children of redeclared subdir", layers: [][]ent{opqLower, {Opq("a"), D("a/sub").Mode(0o750), F("a/sub/new", "n")}},
			want: `
/a dir 0755 0:0
/a/sub dir 0750 0:0
/a/sub/new file 0644 0:0 "n"
/keep file 0644 0:0 "k"`},
		{name: "opaque only", layers: [][]ent{opqLower, {D("a").Mode(0o700), Opq("a")}},
			want: `
/a dir 0700 0:0
/keep file 0644 0:0 "k"`},
		{name: "opaque in missing dir is a no-op", layers: [][]ent{opqLower, {Opq("nodir")}},
			want: `
/a dir 0755 0:0
/a/old file 0644 0:0 "o"
/a/sub dir 0700 0:0
/a/sub/old2 file 0644 0:0 "o2"
/keep file 0644 0:0 "k"`},
		{name: "opaque root", layers: [][]ent{opqLower, {F("x", "x"), Opq("")}},
			want: `/x file 0644 0:0 "x"`},
		{name: "opaque through symlinked parent", layers: [][]ent{with(opqLower, S("l", "a")), {Opq("l")}},
			want: `
/a dir 0755 0:0
/keep file 0644 0:0 "k"
/l symlink 0777 0:0 -> "a"`},
		{name: "opaque dir of same layer keeps its own entries", layers: [][]ent{{D("a"), F("a/x", "x"), Opq("a"), F("a/y", "y")}},
			want: `
/a dir 0755 0:0
/a/x file 0644 0:0 "x"
/a/y file 0644 0:0 "y"`},
		{name: "aufs metadata ignored", layers: [][]ent{{F(".wh..wh.aufs", ""), D(".wh..wh.plnk"), F(".wh..wh.plnk/1.2", "x"), F("a/.wh..wh.orph", "")}},
			want: ``},
	}
}

func TestWhiteouts(t *testing.T) { runCases(t, whiteoutCases()) }

// entryCases cover names, entry types and header fields.
func entryCases() []mergeCase {
	long1, long2 := strings.Repeat("x", 200), strings.Repeat("y", 250)
	longName := "d/" + long1 + "/" + long2
	longTarget := "/" + strings.Repeat("t", 150) + "/" + strings.Repeat("u", 150)
	longListing := `
/d dir 0755 0:0 mtime=0.000000000
/d/` + long1 + ` dir 0755 0:0 mtime=0.000000000
/d/` + long1 + `/` + long2 + ` file 0644 0:0 "long" ino=1
/h file 0644 0:0 "long" ino=1
/` + long2 + ` symlink 0777 0:0 -> "` + longTarget + `"`
	longEnts := func(f tar.Format) []ent {
		return []ent{F(longName, "long").Format(f), S(long2, longTarget).Format(f), L("h", longName).Format(f)}
	}
	capability := "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
	unknown := ent{Header: tar.Header{Typeflag: 'Z', Name: "z", Mode: 0o644, ModTime: defaultMtime, Format: tar.FormatPAX}}
	global := ent{Header: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header", PAXRecords: map[string]string{"comment": "x"}, Format: tar.FormatPAX}}
	regA := F("olda", "a")
	regA.Header.Typeflag = tar.TypeRegA //nolint:staticcheck // testing the old type flag
	regA.Header.Format = tar.FormatUSTAR
	return []mergeCase{
		{name: "dotdot names", layers: [][]ent{{F("../../x", "x"), F("a/../../y", "y"), F("d/../../../d/z", "z")}},
			want: `
/d dir 0755 0:0 mtime=0.000000000
/d/z file 0644 0:0 "z"
/x file 0644 0:0 "x"
/y file 0644 0:0 "y"`},
		{name: "absolute names", layers: [][]ent{{F("/abs/z", "z"), F("//dbl//slash", "s"), F("./dot/./f", "f")}},
			want: `
/abs dir 0755 0:0 mtime=0.000000000
/abs/z file 0644 0:0 "z"
/dbl dir 0755 0:0 mtime=0.000000000
/dbl/slash file 0644 0:0 "s"
/dot dir 0755 0:0 mtime=0.000000000
/dot/f file 0644 0:0 "f"`},
		{name: "backslash names", layers: [][]ent{{F(`a\b`, "1"), F(`c\..\d`, "2"), F(`e\`, "3")}},
			want: `
/a\b file 0644 0:0 "1"
/c\..\d file 0644 0:0 "2"
/e\ file 0644 0:0 "3"`},
		{name: "root entries ignored", layers: [][]ent{{D("./").Mode(0o700).Owner(5, 5).Xattr("user.r", "1"), D("/"), F(".", "x"), F("..", "y"), S("/", "etc")}},
			want: ``},
		{name: "implicit parents", layers: [][]ent{{F("a/b/c", "x")}},
			want: `
/a dir 0755 0:0 mtime=0.000000000
/a/b dir 0755 0:0 mtime=0.000000000
/a/b/c file 0644 0:0 "x"`},
		{name: "long names pax", layers: [][]ent{longEnts(tar.FormatPAX)}, want: longListing},
		{name: "long names gnu", layers: [][]ent{longEnts(tar.FormatGNU)}, want: longListing},
		{name: "long component", layers: [][]ent{{F(strings.Repeat("n", 256), "")}},
			err: `name component of 256 bytes is longer than the 255 bytes a Linux filesystem allows`},
		{name: "path limit", lim: Limits{MaxPathLen: 10}, layers: [][]ent{{F("0123456789a", "")}},
			err: `entry "0123456789a": name length (11 bytes) exceeds the limit of 10 (raise it with --max-path`},
		{name: "link target limit", lim: Limits{MaxPathLen: 10}, layers: [][]ent{{S("s", "0123456789a")}},
			err: `link target length (11 bytes) exceeds the limit of 10 (raise it with --max-path`},
		{name: "duplicate entries last wins", layers: [][]ent{{F("a", "1"), F("a", "2").Mode(0o600), D("d").Mode(0o700), D("d").Mode(0o750).Owner(3, 3)}},
			want: `
/a file 0600 0:0 "2"
/d dir 0750 3:3`},
		{name: "directory after its children", layers: [][]ent{{F("d/f", "x"), D("d/s/"), D("d").Mode(0o700).Owner(1, 2).Mtime(5, 6)}},
			want: `
/d dir 0700 1:2 mtime=5.000000006
/d/f file 0644 0:0 "x"
/d/s dir 0755 0:0`},
		{name: "directory over directory keeps children, takes metadata", layers: [][]ent{{D("d").Xattr("user.a", "1").Owner(1, 1), F("d/f", "x")}, {D("d").Mode(0o711).Xattr("user.b", "2")}},
			want: `
/d dir 0711 0:0 xattr:user.b="2"
/d/f file 0644 0:0 "x"`},
		{name: "directory replaces file", layers: [][]ent{{F("a", "x")}, {D("a")}},
			want: `/a dir 0755 0:0`},
		{name: "file replaces directory subtree", layers: [][]ent{{D("a"), F("a/f", "x"), D("a/s"), F("a/s/g", "y"), L("h", "a/s/g")}, {F("a", "z")}},
			want: `
/a file 0644 0:0 "z"
/h file 0644 0:0 "y"`},
		{name: "modes", layers: [][]ent{{F("m0", "").Mode(0), F("suid", "").Mode(0o4755), F("sgid", "").Mode(0o2755), D("sticky").Mode(0o1777), F("all", "").Mode(0o7777), D("d0").Mode(0), F("d0/f", "")}},
			want: `
/all file 7777 0:0 ""
/d0 dir 0000 0:0
/d0/f file 0644 0:0 ""
/m0 file 0000 0:0 ""
/sgid file 2755 0:0 ""
/sticky dir 1777 0:0
/suid file 4755 0:0 ""`},
		{name: "devices and fifos", layers: [][]ent{{Dev('c', "dev/null", 1, 3), Dev('b', "dev/sda", 8, 0).Mode(0o660).Owner(0, 6), Dev('p', "dev/fifo", 0, 0), Dev('c', "dev/big", 0xfff, 0xfffff)}},
			want: `
/dev dir 0755 0:0 mtime=0.000000000
/dev/big chardev 0666 0:0 4095:1048575
/dev/fifo fifo 0666 0:0
/dev/null chardev 0666 0:0 1:3
/dev/sda blockdev 0660 0:6 8:0`},
		{name: "device number out of range", layers: [][]ent{{Dev('b', "x", 4096, 0)}},
			err: `device number 4096:0 is out of range`},
		{name: "numeric ids, names ignored", layers: [][]ent{{F("f", "").Owner(1000, 1001).Names("root", "root"), D("d").Owner(65534, 4294967294)}},
			want: `
/d dir 0755 65534:4294967294
/f file 0644 1000:1001 ""`},
		{name: "mtime nanoseconds", layers: [][]ent{{F("f", "").Mtime(1234567890, 123456789), D("d").Mtime(-5, 0)}},
			want: `
/d dir 0755 0:0 mtime=-5.000000000
/f file 0644 0:0 "" mtime=1234567890.123456789`},
		{name: "xattrs", layers: [][]ent{{
			F("ping", "").Mode(0o755).Xattr("security.capability", capability).Xattr("trusted.t", "1").Xattr("user.u", "2"),
			D("d").PAX("LIBARCHIVE.xattr.user.l%3Dx", base64.StdEncoding.EncodeToString([]byte("hi!!"))).
				PAX("LIBARCHIVE.xattr.user.both", base64.RawStdEncoding.EncodeToString([]byte("lib"))).Xattr("user.both", "schily"),
			S("s", "ping").Xattr("trusted.sym", "v")}},
			want: `
/d dir 0755 0:0 xattr:user.both="schily" xattr:user.l=x="hi!!"
/ping file 0755 0:0 "" xattr:security.capability="\x01\x00\x00\x02\x00 \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00" xattr:trusted.t="1" xattr:user.u="2"
/s symlink 0777 0:0 -> "ping" xattr:trusted.sym="v"`},
		{name: "user xattrs on special files dropped", layers: [][]ent{{Dev('c', "c", 1, 1).Xattr("user.a", "1").Xattr("trusted.b", "2"), Dev('p', "p", 0, 0).Xattr("user.a", "1"), S("s", "x").Xattr("user.a", "1")}},
			want: `
/c chardev 0666 0:0 1:1 xattr:trusted.b="2"
/p fifo 0666 0:0
/s symlink 0777 0:0 -> "x"`},
		{name: "xattr value too big", layers: [][]ent{{F("f", "").Xattr("user.big", strings.Repeat("v", 64*1024+1))}},
			err: `xattr "user.big" value of 65537 bytes exceeds the 65536 bytes Linux allows`},
		{name: "xattr name without namespace", layers: [][]ent{{F("f", "").Xattr("nonamespace", "v")}},
			err: `invalid xattr name "nonamespace"`},
		{name: "xattr name too long", layers: [][]ent{{F("f", "").Xattr("user."+strings.Repeat("n", 251), "v")}},
			err: `invalid xattr name "user.nnnn`},
		{name: "xattr bad base64", layers: [][]ent{{F("f", "").PAX("LIBARCHIVE.xattr.user.a", "!!!")}},
			err: `value is not base64`},
		{name: "old regular type flag", layers: [][]ent{{regA}},
			want: `/olda file 0644 0:0 "a"`},
		{name: "unknown entry type", layers: [][]ent{{unknown}},
			err: `entry "z": unsupported tar entry type 'Z': the image is malformed or hostile`},
		{name: "pax global header ignored", layers: [][]ent{{global, F("f", "x")}},
			want: `/f file 0644 0:0 "x"`},
		{name: "entries limit", lim: Limits{MaxEntries: 3}, layers: [][]ent{{F("a", ""), F("b", "")}, {F("c/d", "")}},
			err: `layer 2: entry "c/d": number of entries exceeds the limit of 3 (raise it with --max-entries`},
		{name: "bytes limit", lim: Limits{MaxBytes: 10}, layers: [][]ent{{F("a", "12345")}, {F("b", "123456")}},
			err: `layer 2: entry "b": total uncompressed size exceeds the limit of 10 bytes (10 B) (raise it with --max-bytes`},
		{name: "bytes limit counts xattrs", lim: Limits{MaxBytes: 10}, layers: [][]ent{{F("a", "").Xattr("user.a", "123456")}},
			err: `--max-bytes`},
	}
}

func TestEntries(t *testing.T) { runCases(t, entryCases()) }

// deepTree is the dump of a file "deep" under n implicit directories d/.
func deepTree(n int) string {
	var b strings.Builder
	p := ""
	for range n {
		p += "/d"
		b.WriteString("\n" + p + " dir 0755 0:0 mtime=0.000000000")
	}
	b.WriteString("\n" + p + `/f file 0644 0:0 "deep"`)
	return b.String()
}

// TestLongNameErrorIsShort: an error about a hostile, very long name
// quotes a bounded part of it.
func TestLongNameErrorIsShort(t *testing.T) {
	long := strings.Repeat("x", 200) + "/" + strings.Repeat("y/", 100000) + "z"
	_, _, err := merge(t, Limits{MaxPathLen: 1 << 30}, testtar.Build(t, F("f", "x"), F("f/"+long, "")))
	if err == nil {
		t.Fatal("no error")
	}
	if len(err.Error()) > 1000 {
		t.Errorf("error of %d bytes", len(err.Error()))
	}
	if !strings.Contains(err.Error(), "bytes)") {
		t.Errorf("error does not say the name was cut: %v", err)
	}
}
