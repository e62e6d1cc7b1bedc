//go:build linux

package ext4

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/docker2vm/docker2vm/fstree"
	"github.com/docker2vm/docker2vm/internal/require"
)

// treeFromDir loads a host directory into a tree, storing file data in s.
func treeFromDir(t testing.TB, root string, s fstree.Store) *fstree.Tree {
	tr := fstree.New()
	seen := map[uint64]*fstree.Inode{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		n := &fstree.Inode{Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid,
			Mtime: ts(st.Mtim.Sec, uint32(st.Mtim.Nsec)), Atime: ts(st.Atim.Sec, uint32(st.Atim.Nsec)), Ctime: ts(st.Ctim.Sec, uint32(st.Ctim.Nsec))}
		if rel == "." {
			tr.Root.Mode, tr.Root.UID, tr.Root.GID, tr.Root.Mtime = n.Mode, n.UID, n.GID, n.Mtime
			return nil
		}
		if prev, ok := seen[st.Ino]; ok && st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			fstree.Link(mkdirAll(tr, filepath.Dir(rel)), filepath.Base(rel), prev, nil)
			return nil
		}
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			n.Type = fstree.TypeDir
		case syscall.S_IFREG:
			n.Type = fstree.TypeRegular
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			n.Content, err = s.Put(context.Background(), f, st.Size)
			f.Close()
			if err != nil {
				return err
			}
		case syscall.S_IFLNK:
			n.Type = fstree.TypeSymlink
			n.Target, _ = os.Readlink(p)
		default:
			return nil
		}
		seen[st.Ino] = n
		fstree.Link(mkdirAll(tr, filepath.Dir(rel)), filepath.Base(rel), n, nil)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// TestHostTree converts the host directory in EXT4_HOST_TREE, checks the
// image like the other tests and compares the time with mke2fs -d.
func TestHostTree(t *testing.T) {
	dir := os.Getenv("EXT4_HOST_TREE")
	if dir == "" {
		t.Skip("set EXT4_HOST_TREE=/some/dir")
	}
	start := time.Now()
	img, tr, hs := buildWith(t, Options{SourceDateEpoch: sde}, func(t testing.TB, s fstree.Store) *fstree.Tree {
		return treeFromDir(t, dir, s)
	})
	took := time.Since(start)
	var files int
	tr.Walk(func(string, *fstree.Inode) error { files++; return nil })
	fsck(t, img)
	compareMounted(t, mountImage(t, img, false), tr, hs)
	ref := filepath.Join(t.TempDir(), "ref")
	start = time.Now()
	if out, err := exec.Command(require.Tool(t, "mke2fs"), "-q", "-F", "-t", "ext4", "-d", dir, ref, "8G").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	t.Logf("%d entries: writer %v, mke2fs -d %v", files, took, time.Since(start))
}
