package ext4

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker2vm/docker2vm/fstree"
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
		if w.Type != fstree.TypeDir && w.Links != g.Links {
			fail(p, "links %d, want %d", g.Links, w.Links)
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
				cmp(strings.TrimPrefix(p+"/"+name, "/"), w.Children[name], g.Children[name])
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

// makeSourceDir builds a host directory with every kind of entry; it needs
// root for device nodes and ownership.
func makeSourceDir(t testing.TB, dir string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "etc/sub"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "etc/hello"), []byte("hello\n"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "etc/tiny"), []byte("t"), 0o600))
	must(os.WriteFile(filepath.Join(dir, "empty"), nil, 0o644))
	big := make([]byte, 300<<10)
	for i := range big {
		big[i] = byte(i % 251)
	}
	must(os.WriteFile(filepath.Join(dir, "big"), big, 0o755))
	f, err := os.Create(filepath.Join(dir, "sparse"))
	must(err)
	_, err = f.WriteAt([]byte("start"), 0)
	must(err)
	_, err = f.WriteAt([]byte("end"), 20<<20)
	must(err)
	f.Close()
	must(os.Symlink("hello", filepath.Join(dir, "etc/fast")))
	must(os.Symlink(strings.Repeat("s", 300), filepath.Join(dir, "slow")))
	must(os.Link(filepath.Join(dir, "etc/hello"), filepath.Join(dir, "hardlink")))
	must(syscall.Mknod(filepath.Join(dir, "null"), syscall.S_IFCHR|0o666, 1<<8|3))
	must(syscall.Mknod(filepath.Join(dir, "sda"), syscall.S_IFBLK|0o660, 8<<8|0))
	must(syscall.Mknod(filepath.Join(dir, "fifo"), syscall.S_IFIFO|0o644, 0))
	must(os.Lchown(filepath.Join(dir, "etc/tiny"), 100000, 70000))
	must(syscall.Setxattr(filepath.Join(dir, "etc/hello"), "user.greeting", []byte("hi"), 0))
	must(syscall.Setxattr(filepath.Join(dir, "big"), "user.large", bytes.Repeat([]byte("L"), 900), 0))
	must(os.Mkdir(filepath.Join(dir, "many"), 0o755))
	for i := 0; i < 600; i++ {
		must(os.WriteFile(filepath.Join(dir, "many", fmt.Sprintf("f%05d-some-padding", i)), []byte{byte(i)}, 0o644))
	}
	must(os.Chmod(filepath.Join(dir, "etc/sub"), 0o1777))
	tm := time.Unix(1600000000, 0)
	must(os.Chtimes(filepath.Join(dir, "etc/hello"), tm, tm))
}

// compareWithDir checks an extracted tree against the host directory it was
// made from (what debugfs would show): type, mode, owner, size, content,
// target, device numbers, xattrs, mtime seconds, link counts.
func compareWithDir(t *testing.T, dir string, got *fstree.Inode) {
	t.Helper()
	var errs []string
	fail := func(p, format string, args ...any) {
		if len(errs) < 30 {
			errs = append(errs, p+": "+fmt.Sprintf(format, args...))
		}
	}
	var cmp func(p string, g *fstree.Inode)
	cmp = func(p string, g *fstree.Inode) {
		full := filepath.Join(dir, p)
		var st syscall.Stat_t
		if err := syscall.Lstat(full, &st); err != nil {
			fail(p, "%v", err)
			return
		}
		if st.Mode&0o7777 != g.Mode || st.Uid != g.UID || st.Gid != g.GID {
			fail(p, "mode/owner %o %d:%d, want %o %d:%d", g.Mode, g.UID, g.GID, st.Mode&0o7777, st.Uid, st.Gid)
		}
		if p != "" && st.Mtim.Sec != g.Mtime.Sec { // mke2fs -d does not copy the root's times
			fail(p, "mtime %d, want %d", g.Mtime.Sec, st.Mtim.Sec)
		}
		xs, err := lgetxattrs(full)
		if err != nil {
			fail(p, "%v", err)
		}
		for name := range xs {
			if strings.HasPrefix(name, "security.selinux") {
				delete(xs, name)
			}
		}
		if len(xs) != len(g.Xattrs) {
			fail(p, "xattrs %v, want %v", g.Xattrs, keys(xs))
		}
		for _, x := range g.Xattrs {
			if !bytes.Equal(xs[x.Name], x.Value) {
				fail(p, "xattr %s differs", x.Name)
			}
		}
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			if g.Type != fstree.TypeRegular {
				fail(p, "type %v", g.Type)
				return
			}
			want, _ := os.ReadFile(full)
			if !bytes.Equal(want, fstree.Bytes(g.Content)) {
				fail(p, "content differs (%d vs %d bytes)", g.Size(), len(want))
			}
			if uint64(g.Links) != uint64(st.Nlink) {
				fail(p, "links %d, want %d", g.Links, st.Nlink)
			}
		case syscall.S_IFLNK:
			want, _ := os.Readlink(full)
			if g.Type != fstree.TypeSymlink || g.Target != want {
				fail(p, "symlink %v %q, want %q", g.Type, g.Target, want)
			}
		case syscall.S_IFCHR, syscall.S_IFBLK:
			if g.Major != uint32(st.Rdev>>8&0xfff) || g.Minor != uint32(st.Rdev&0xff) {
				fail(p, "device %d:%d", g.Major, g.Minor)
			}
		case syscall.S_IFIFO:
			if g.Type != fstree.TypeFIFO {
				fail(p, "type %v", g.Type)
			}
		case syscall.S_IFDIR:
			if g.Type != fstree.TypeDir {
				fail(p, "type %v", g.Type)
				return
			}
			ents, _ := os.ReadDir(full)
			var want []string
			for _, e := range ents {
				want = append(want, e.Name())
			}
			sort.Strings(want)
			gn := fstree.SortedNames(g)
			if p == "" {
				gn = slicesDelete(gn, "lost+found")
			}
			if strings.Join(want, "/") != strings.Join(gn, "/") {
				fail(p, "entries %v, want %v", gn, want)
				return
			}
			for _, name := range want {
				cmp(filepath.Join(p, name), g.Children[name])
			}
		}
	}
	cmp("", got)
	if len(errs) > 0 {
		t.Fatalf("extracted tree differs from the source directory:\n%s", strings.Join(errs, "\n"))
	}
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
	bin := needTool(t, "mke2fs")
	cmd := exec.Command(bin, append(append([]string{"-q", "-F", "-E", "root_owner=0:0"}, args...), "-d", src, img, size)...)
	cmd.Env = append(os.Environ(), "MKE2FS_CONFIG=/etc/mke2fs.conf", "E2FSPROGS_FAKE_TIME=1700000000")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mke2fs %v: %v\n%s", args, err, out)
	}
}

func TestReaderMke2fs(t *testing.T) {
	needRoot(t)
	src := t.TempDir()
	makeSourceDir(t, src)
	for _, v := range mke2fsVariants {
		t.Run(v.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "img")
			mke2fs(t, img, src, "64M", v.args...)
			if v.name == "ext4-htree" {
				out, _ := exec.Command(needTool(t, "e2fsck"), "-fyD", img).CombinedOutput()
				if dump, _ := exec.Command(needTool(t, "debugfs"), "-R", "htree /many", img).CombinedOutput(); !bytes.Contains(dump, []byte("Indirect levels")) {
					t.Fatalf("e2fsck -D did not index /many:\n%s\n%s", out, dump)
				}
			}
			fsys := openImage(t, img)
			mem := &fstree.MemStore{}
			got, err := fsys.Extract(context.Background(), "", mem)
			if err != nil {
				t.Fatal(err)
			}
			compareWithDir(t, src, got)
			// and the writer turns it back into an image the kernel agrees with
			out := writeImage(t, Options{Source: mem}, func(w *Writer) *fstree.Tree { return &fstree.Tree{Root: got} })
			fsck(t, out)
		})
	}
}
