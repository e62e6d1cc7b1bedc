//go:build linux

package ext4

import (
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/docker2vm/docker2vm/fstree"
)

// mountImage loop-mounts img (read-only unless rw) and unmounts at cleanup.
func mountImage(t testing.TB, img string, rw bool) string {
	t.Helper()
	needRoot(t)
	dir := t.TempDir()
	opt := "loop,ro"
	if rw {
		opt = "loop"
	}
	if out, err := exec.Command("mount", "-t", "ext4", "-o", opt, img, dir).CombinedOutput(); err != nil {
		t.Fatalf("mount %s: %v\n%s", img, err, out)
	}
	t.Cleanup(func() {
		// already unmounted by the test when this fails
		exec.Command("umount", dir).Run()
	})
	return dir
}

func umount(t testing.TB, dir string) {
	t.Helper()
	if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v\n%s", err, out)
	}
	// The loop device is released asynchronously: what the unmount wrote
	// may still sit in its page cache, not yet in the image file. sync(2)
	// writes it through before the test reads the file.
	syscall.Sync()
}

func lgetxattrs(path string) (map[string][]byte, error) {
	p, err := syscall.BytePtrFromString(path)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 64<<10)
	n, _, e := syscall.Syscall(syscall.SYS_LLISTXATTR, uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
	if e != 0 {
		return nil, e
	}
	out := map[string][]byte{}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		np, _ := syscall.BytePtrFromString(name)
		val := make([]byte, 64<<10)
		m, _, e := syscall.Syscall6(syscall.SYS_LGETXATTR, uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(np)), uintptr(unsafe.Pointer(&val[0])), uintptr(len(val)), 0, 0)
		if e != 0 {
			return nil, e
		}
		out[name] = val[:m]
	}
	return out, nil
}

// compareMounted walks the tree and checks every entry against the mounted
// filesystem: type, mode, owner, size, content, target, xattrs, times,
// link count and device numbers; and that the mount has nothing extra.
func compareMounted(t *testing.T, dir string, tr *fstree.Tree, hs *hashingStore) {
	t.Helper()
	var errs []string
	fail := func(p, format string, args ...any) {
		if len(errs) < 30 {
			errs = append(errs, p+": "+sprintf(format, args...))
		}
	}
	err := tr.Walk(func(p string, n *fstree.Inode) error {
		full := filepath.Join(dir, p)
		var st syscall.Stat_t
		if err := syscall.Lstat(full, &st); err != nil {
			fail(p, "lstat: %v", err)
			return nil
		}
		wantType := map[fstree.Type]uint32{fstree.TypeRegular: syscall.S_IFREG, fstree.TypeDir: syscall.S_IFDIR,
			fstree.TypeSymlink: syscall.S_IFLNK, fstree.TypeCharDev: syscall.S_IFCHR, fstree.TypeBlockDev: syscall.S_IFBLK,
			fstree.TypeFIFO: syscall.S_IFIFO, fstree.TypeSocket: syscall.S_IFSOCK}[n.Type]
		if st.Mode&syscall.S_IFMT != wantType {
			fail(p, "type %o, want %o", st.Mode&syscall.S_IFMT, wantType)
			return nil
		}
		if st.Mode&0o7777 != n.Mode&0o7777 {
			fail(p, "mode %o, want %o", st.Mode&0o7777, n.Mode)
		}
		if st.Uid != n.UID || st.Gid != n.GID {
			fail(p, "owner %d:%d, want %d:%d", st.Uid, st.Gid, n.UID, n.GID)
		}
		if st.Mtim.Sec != n.Mtime.Sec || st.Mtim.Nsec != int64(n.Mtime.Nsec) {
			fail(p, "mtime %d.%09d, want %d.%09d", st.Mtim.Sec, st.Mtim.Nsec, n.Mtime.Sec, n.Mtime.Nsec)
		}
		if st.Ctim.Sec != n.Ctime.Sec || st.Ctim.Nsec != int64(n.Ctime.Nsec) {
			fail(p, "ctime %d.%09d, want %d.%09d", st.Ctim.Sec, st.Ctim.Nsec, n.Ctime.Sec, n.Ctime.Nsec)
		}
		if st.Atim.Sec != n.Atime.Sec || st.Atim.Nsec != int64(n.Atime.Nsec) {
			fail(p, "atime %d.%09d, want %d.%09d", st.Atim.Sec, st.Atim.Nsec, n.Atime.Sec, n.Atime.Nsec)
		}
		wantLinks := uint64(n.Links())
		if n.IsDir() {
			wantLinks = 2
			for _, c := range n.Children() {
				if c.IsDir() {
					wantLinks++
				}
			}
			if p == "" {
				if n.Child("lost+found") == nil {
					wantLinks++
				}
			}
			if wantLinks > maxLinks {
				wantLinks = 1
			}
		}
		if uint64(st.Nlink) != wantLinks {
			fail(p, "nlink %d, want %d", st.Nlink, wantLinks)
		}
		switch n.Type {
		case fstree.TypeRegular:
			if st.Size != n.Size() {
				fail(p, "size %d, want %d", st.Size, n.Size())
			}
			f, err := os.Open(full)
			if err != nil {
				fail(p, "%v", err)
				break
			}
			sh := sha256.New()
			_, err = io.Copy(sh, f)
			f.Close()
			if err != nil {
				fail(p, "read: %v", err)
				break
			}
			want := sha256.Sum256(nil)
			if n.Content != nil {
				want = hs.sums[n.Content]
			}
			if !bytes.Equal(sh.Sum(nil), want[:]) {
				fail(p, "content differs")
			}
		case fstree.TypeSymlink:
			target, err := os.Readlink(full)
			if err != nil || target != n.Target {
				fail(p, "readlink %q, %v; want %q", target, err, n.Target)
			}
		case fstree.TypeCharDev, fstree.TypeBlockDev:
			ma, mi := uint32((st.Rdev>>8)&0xfff|(st.Rdev>>32)&^0xfff), uint32(st.Rdev&0xff|(st.Rdev>>12)&^0xff)
			if ma != n.Major || mi != n.Minor {
				fail(p, "device %d:%d, want %d:%d", ma, mi, n.Major, n.Minor)
			}
		case fstree.TypeDir:
			ents, err := os.ReadDir(full)
			if err != nil {
				fail(p, "readdir: %v", err)
				break
			}
			var got []string
			for _, e := range ents {
				if p == "" && e.Name() == "lost+found" {
					continue
				}
				got = append(got, e.Name())
			}
			want := fstree.SortedNames(n)
			if p == "" {
				want = slicesDelete(want, "lost+found")
			}
			sort.Strings(got)
			if strings.Join(got, "/") != strings.Join(want, "/") {
				fail(p, "entries differ: %d on disk, %d in tree", len(got), len(want))
			}
		}
		xs, err := lgetxattrs(full)
		if err != nil {
			fail(p, "xattrs: %v", err)
			return nil
		}
		if len(xs) != len(n.Xattrs) {
			fail(p, "%d xattrs, want %d (%v)", len(xs), len(n.Xattrs), keys(xs))
		}
		for _, x := range n.Xattrs {
			if v, ok := xs[x.Name]; !ok || !bytes.Equal(v, x.Value) {
				fail(p, "xattr %s = %x, want %x", x.Name, v, x.Value)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(errs) > 0 {
		t.Fatalf("mounted image differs from the tree:\n%s", strings.Join(errs, "\n"))
	}
}

func keys(m map[string][]byte) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}
