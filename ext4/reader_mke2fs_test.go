//go:build linux

package ext4

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker2vm/docker2vm/fstree"
	"github.com/docker2vm/docker2vm/internal/require"
)

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
			if uint64(g.Links()) != uint64(st.Nlink) {
				fail(p, "links %d, want %d", g.Links(), st.Nlink)
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
				cmp(filepath.Join(p, name), g.Child(name))
			}
		}
	}
	cmp("", got)
	if len(errs) > 0 {
		t.Fatalf("extracted tree differs from the source directory:\n%s", strings.Join(errs, "\n"))
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
				out, _ := exec.Command(require.Tool(t, "e2fsck"), "-fyD", img).CombinedOutput()
				if dump, _ := exec.Command(require.Tool(t, "debugfs"), "-R", "htree /many", img).CombinedOutput(); !bytes.Contains(dump, []byte("Indirect levels")) {
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
