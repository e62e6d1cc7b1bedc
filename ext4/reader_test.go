package ext4

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/docker2vm/docker2vm/fstree"
	"github.com/docker2vm/docker2vm/internal/require"
)

func openImage(t testing.TB, img string) *FS {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := Open(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	return fsys
}

// compareTrees checks that got (read back) matches want (written), with
// content compared through their stores.
func compareTrees(t *testing.T, want, got *fstree.Inode, wantSums map[fstree.Content][32]byte, gotStore *fstree.MemStore) {
	t.Helper()
	var errs []string
	fail := func(p, format string, args ...any) {
		if len(errs) < 30 {
			errs = append(errs, p+": "+fmt.Sprintf(format, args...))
		}
	}
	var cmp func(p string, w, g *fstree.Inode)
	cmp = func(p string, w, g *fstree.Inode) {
		if w.Type != g.Type || w.Mode != g.Mode || w.UID != g.UID || w.GID != g.GID {
			fail(p, "got %v %o %d:%d, want %v %o %d:%d", g.Type, g.Mode, g.UID, g.GID, w.Type, w.Mode, w.UID, w.GID)
			return
		}
		if w.Mtime != g.Mtime || w.Atime != g.Atime || w.Ctime != g.Ctime {
			fail(p, "times %v %v %v, want %v %v %v", g.Mtime, g.Atime, g.Ctime, w.Mtime, w.Atime, w.Ctime)
		}
		if w.Type != fstree.TypeDir && w.Links() != g.Links() {
			fail(p, "links %d, want %d", g.Links(), w.Links())
		}
		if w.Target != g.Target || w.Major != g.Major || w.Minor != g.Minor {
			fail(p, "target/dev %q %d:%d, want %q %d:%d", g.Target, g.Major, g.Minor, w.Target, w.Major, w.Minor)
		}
		if fmt.Sprint(w.Xattrs) != fmt.Sprint(g.Xattrs) && !(len(w.Xattrs) == 0 && len(g.Xattrs) == 0) {
			fail(p, "xattrs %q, want %q", g.Xattrs, w.Xattrs)
		}
		if w.Type == fstree.TypeRegular {
			if w.Size() != g.Size() {
				fail(p, "size %d, want %d", g.Size(), w.Size())
			} else if w.Content != nil {
				if sha256.Sum256(fstree.Bytes(g.Content)) != wantSums[w.Content] {
					fail(p, "content differs")
				}
			}
		}
		if w.Type == fstree.TypeDir {
			wn, gn := fstree.SortedNames(w), fstree.SortedNames(g)
			if p == "" {
				gn = slicesDelete(gn, "lost+found")
				wn = slicesDelete(wn, "lost+found")
			}
			if strings.Join(wn, "/") != strings.Join(gn, "/") {
				fail(p, "entries %d, want %d", len(gn), len(wn))
				return
			}
			for _, name := range wn {
				cmp(strings.TrimPrefix(p+"/"+name, "/"), w.Child(name), g.Child(name))
			}
		}
	}
	cmp("", want, got)
	if len(errs) > 0 {
		t.Fatalf("read-back tree differs:\n%s", strings.Join(errs, "\n"))
	}
}

func TestReaderRoundTrip(t *testing.T) {
	for _, opts := range []Options{{SourceDateEpoch: sde}, {NoJournal: true}} {
		img, tr, hs := buildWith(t, opts, kindsTree)
		fsys := openImage(t, img)
		mem := &fstree.MemStore{}
		got, err := fsys.Extract(context.Background(), "", mem)
		if err != nil {
			t.Fatal(err)
		}
		compareTrees(t, tr.Root, got, hs.sums, mem)

		if target, err := fsys.Readlink("bin/sh"); err != nil || target != "busybox" {
			t.Errorf("Readlink: %q %v", target, err)
		}
		if n, err := fsys.Lookup("/x/../etc/hello"); err != nil || n.Size != 12 || n.Type != fstree.TypeRegular {
			t.Errorf("Lookup: %+v %v", n, err)
		}
		if _, err := fsys.Lookup("nope/x"); !errorsIs(err, ErrNotExist) {
			t.Errorf("missing path: %v", err)
		}
		r, err := fsys.Open("partial-hole")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r)
		if len(b) != 2*blockSize+17 || b[0] != 'x' || b[blockSize] != 0 || b[2*blockSize] != 'x' {
			t.Errorf("partial-hole read back wrong (%d bytes)", len(b))
		}
		ents, err := fsys.ReadDir("mid")
		if err != nil || len(ents) != 500 || ents[0].Name != "entry-with-a-longish-name-0000" || ents[0].Type != fstree.TypeFIFO {
			t.Errorf("ReadDir: %d entries, %v", len(ents), err)
		}
		xs, err := fsys.Xattrs("bin/ping")
		if err != nil || len(xs) != 1 || xs[0].Name != "security.capability" {
			t.Errorf("Xattrs: %v %v", xs, err)
		}
		// identical xattr sets share one block, with a matching refcount
		var acl []uint32
		for _, name := range []string{"x/shared0", "x/shared1", "x/shared2", "x/lone"} {
			n, err := fsys.Lookup(name)
			if err != nil {
				t.Fatal(err)
			}
			acl = append(acl, le.Uint32(n.raw[iFileACLLo:]))
		}
		if acl[0] == 0 || acl[0] != acl[1] || acl[1] != acl[2] || acl[3] == acl[0] || acl[3] == 0 {
			t.Errorf("xattr blocks %v: want the first three shared", acl)
		} else if blk, _ := fsys.readBlock(uint64(acl[0])); le.Uint32(blk[4:]) != 3 {
			t.Errorf("shared xattr block refcount %d, want 3", le.Uint32(blk[4:]))
		}
		if fsys.Label() != "gondolin-root" {
			t.Errorf("label %q", fsys.Label())
		}
	}
}

func errorsIs(err, target error) bool {
	for err != nil {
		if err == target {
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

// mke2fsVariants are the feature sets the reader is tested against.
var mke2fsVariants = []struct {
	name string
	args []string
}{
	{"ext4", []string{"-t", "ext4"}},
	{"ext4-1k", []string{"-t", "ext4", "-b", "1024"}},
	{"ext4-32bit", []string{"-t", "ext4", "-O", "^64bit"}},
	{"ext4-nocsum", []string{"-t", "ext4", "-O", "^metadata_csum"}},
	{"ext4-nojournal", []string{"-t", "ext4", "-O", "^has_journal"}},
	{"ext4-inline", []string{"-t", "ext4", "-O", "inline_data"}},
	{"ext4-128", []string{"-t", "ext4", "-I", "128"}},
	{"ext3", []string{"-t", "ext3"}},
	{"ext2", []string{"-t", "ext2"}},
	{"ext4-64k", []string{"-t", "ext4", "-b", "65536"}},
	{"ext4-htree", []string{"-t", "ext4"}}, // then e2fsck -D indexes the directories
}

func mke2fs(t testing.TB, img, src string, size string, args ...string) {
	t.Helper()
	bin := require.Tool(t, "mke2fs")
	cmd := exec.Command(bin, append(append([]string{"-q", "-F", "-E", "root_owner=0:0"}, args...), "-d", src, img, size)...)
	cmd.Env = append(os.Environ(), "MKE2FS_CONFIG=/etc/mke2fs.conf", "E2FSPROGS_FAKE_TIME=1700000000")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mke2fs %v: %v\n%s", args, err, out)
	}
}
