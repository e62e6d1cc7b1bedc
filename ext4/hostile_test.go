package ext4

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/docker2vm/docker2vm/fstree"
)

// smallImage returns a 1 MiB image with /a/b, a file of 20 extents and a
// small file, and the reader over it.
func smallImage(t *testing.T) ([]byte, *FS) {
	img := writeImage(t, Options{Size: 1 << 20, NoJournal: true, InodeRatio: 1 << 20}, func(w *Writer) *fstree.Tree {
		tr := fstree.New()
		mkdirAll(tr, "a/b")
		c, err := w.Put(context.Background(), &holeyReader{size: 40 * blockSize, period: 2 * blockSize}, 40*blockSize)
		if err != nil {
			t.Fatal(err)
		}
		add(tr, "frag", &fstree.Inode{Type: fstree.TypeRegular, Mode: 0o644, Content: c})
		add(tr, "small", file(t, w, []byte("small"), 0o644))
		return tr
	})
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return b, fsys
}

func TestReaderHostile(t *testing.T) {
	base, fsys := smallImage(t)
	inodeOff := func(path string) int64 {
		n, err := fsys.Lookup(path)
		if err != nil {
			t.Fatal(err)
		}
		g, i := int64(n.Ino-1)/int64(fsys.ipg), int64(n.Ino-1)%int64(fsys.ipg)
		return int64(fsys.itables[g])*fsys.bs + i*int64(fsys.inodeSize)
	}
	firstBlock := func(path string) int64 {
		n, _ := fsys.Lookup(path)
		ext, err := fsys.extents(n)
		if err != nil || len(ext) == 0 {
			t.Fatal(path, err)
		}
		return int64(ext[0].phys) * fsys.bs
	}
	a, _ := fsys.Lookup("a")
	for _, tc := range []struct {
		name  string
		patch func(b []byte)
		want  string
	}{
		{"directory loop", func(b []byte) {
			// /a's entry "b" now names /a itself
			blk := firstBlock("a")
			i := bytes.Index(b[blk:blk+blockSize], []byte{1, 2, 'b'}) // name_len 1, type dir, "b"
			le.PutUint32(b[blk+int64(i)-6:], a.Ino)
		}, "directory loop"},
		{"extent depth", func(b []byte) {
			le.PutUint16(b[inodeOff("frag")+iBlock+6:], 2) // root claims depth 2 over leaves
		}, "bad extent header"},
		{"extent out of range", func(b []byte) {
			le.PutUint32(b[inodeOff("small")+iBlock+12+8:], 1<<30)
		}, "out of range"},
		{"huge size", func(b []byte) {
			le.PutUint32(b[inodeOff("small")+iSizeHigh:], 0xFFFFFFFF)
		}, "out of range"},
		{"zero rec_len", func(b []byte) {
			le.PutUint16(b[firstBlock("a")+4:], 0)
		}, "corrupt directory entry"},
		{"inode count", func(b []byte) {
			le.PutUint32(b[superblockOffset:], 1<<31)
		}, "group count does not fit"},
		{"block count", func(b []byte) {
			le.PutUint32(b[superblockOffset+0x150:], 1<<20)
		}, "group count does not fit"},
		{"magic", func(b []byte) { b[superblockOffset+0x38] = 0 }, "bad superblock magic"},
		{"truncated", func(b []byte) {}, "bad inode table"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := bytes.Clone(base)
			tc.patch(b)
			if tc.name == "truncated" {
				b = b[:3*blockSize] // superblock and descriptors only
			}
			var err error
			f, err := Open(bytes.NewReader(b), int64(len(b)))
			if err == nil {
				_, err = f.Extract(context.Background(), "", &fstree.MemStore{})
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
