package ext4

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/docker2vm/docker2vm/fstree"
)

// discardStore reads at most 64 KiB per file, so that hostile sizes cannot
// make the fuzzer read forever.
type discardStore struct{}

type sized int64

func (s sized) Size() int64 { return int64(s) }

func (discardStore) Put(ctx context.Context, r io.Reader, size int64) (fstree.Content, error) {
	if _, err := io.CopyN(io.Discard, r, min(size, 64<<10)); err != nil {
		return nil, err
	}
	return sized(size), nil
}

func (discardStore) Release(fstree.Content) {}

var errEnough = errors.New("enough")

// exercise runs every reader entry point over an image.
func exercise(fsys *FS) {
	count := 0
	fsys.Walk("", func(p string, n *Inode) error {
		if count++; count > 2000 {
			return errEnough
		}
		fsys.xattrs(n)
		switch n.Type {
		case fstree.TypeSymlink:
			fsys.readlink(n)
		case fstree.TypeRegular:
			if r, err := fsys.reader(n); err == nil {
				io.CopyN(io.Discard, r, 64<<10)
			}
		}
		return nil
	})
	fsys.Lookup("/etc/../a/b/c")
	fsys.Extract(context.Background(), "", discardStore{})
}

// FuzzOpen feeds mutated mke2fs images to every reader entry point. Run it
// with -fuzzminimizetime 0: minimizing 256 KiB inputs stalls the fuzzer.
//
//	go test ./ext4 -run '^$' -fuzz FuzzOpen -fuzztime 2m -fuzzminimizetime 0
func FuzzOpen(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.img.gz")
	for _, s := range seeds {
		b, err := readGz(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// a hang is a bug too: crash so the fuzzer keeps the input
		tm := time.AfterFunc(10*time.Second, func() { panic("ext4 reader: input took over 10s") })
		defer tm.Stop()
		fsys, err := Open(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		exercise(fsys)
	})
}

func readGz(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

// TestMakeFuzzSeeds regenerates testdata/*.img.gz with mke2fs when
// EXT4_UPDATE_TESTDATA=1.
func TestMakeFuzzSeeds(t *testing.T) {
	if os.Getenv("EXT4_UPDATE_TESTDATA") != "1" {
		t.Skip("set EXT4_UPDATE_TESTDATA=1 to regenerate the fuzz seeds")
	}
	src := t.TempDir()
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "etc/d"), 0o755))
	must(os.WriteFile(filepath.Join(src, "etc/hello"), []byte("hello\n"), 0o644))
	must(os.WriteFile(filepath.Join(src, "etc/d/big"), bytes.Repeat([]byte("0123456789"), 2000), 0o644))
	must(os.Symlink("hello", filepath.Join(src, "etc/link")))
	must(os.Symlink(string(bytes.Repeat([]byte("s"), 100)), filepath.Join(src, "slow")))
	must(os.Link(filepath.Join(src, "etc/hello"), filepath.Join(src, "hard")))
	for i := 0; i < 40; i++ {
		must(os.WriteFile(filepath.Join(src, "etc/d", "entry-"+string(rune('a'+i%26))+string(rune('a'+i/26))), nil, 0o600))
	}
	must(os.MkdirAll("testdata", 0o755))
	for name, args := range map[string][]string{
		"ext4-1k":     {"-t", "ext4", "-b", "1024", "-O", "^has_journal", "-N", "64"},
		"ext4-inline": {"-t", "ext4", "-b", "1024", "-O", "^has_journal,inline_data", "-N", "64"},
		"ext2":        {"-t", "ext2", "-b", "1024", "-N", "64"},
		"ext4-nocsum": {"-t", "ext4", "-b", "1024", "-O", "^has_journal,^metadata_csum,^64bit", "-N", "64"},
	} {
		img := filepath.Join(t.TempDir(), "img")
		mke2fs(t, img, src, "256k", args...)
		b, err := os.ReadFile(img)
		must(err)
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		zw.Write(b)
		zw.Close()
		must(os.WriteFile(filepath.Join("testdata", name+".img.gz"), buf.Bytes(), 0o644))
	}
}

func TestReaderFuzzSeeds(t *testing.T) {
	seeds, _ := filepath.Glob("testdata/*.img.gz")
	if len(seeds) == 0 {
		t.Fatal("no seeds in testdata")
	}
	for _, s := range seeds {
		b, err := readGz(s)
		if err != nil {
			t.Fatal(err)
		}
		fsys, err := Open(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		n := 0
		if err := fsys.Walk("", func(p string, _ *Inode) error { n++; return nil }); err != nil || n < 45 {
			t.Fatalf("%s: walked %d entries: %v", s, n, err)
		}
		if r, err := fsys.Open("etc/d/big"); err != nil || r.Size() != 20000 {
			t.Fatalf("%s: %v", s, err)
		}
		if l, err := fsys.Readlink("slow"); err != nil || len(l) != 100 {
			t.Fatalf("%s: slow symlink %q %v", s, l, err)
		}
	}
}
