package testenv

import (
	"os"

	"github.com/docker2vm/docker2vm/ext4"
)

// OpenExt4 opens an ext4 image with docker2vm's own reader; the file is
// closed when the test ends.
func OpenExt4(t TB, path string) *ext4.FS {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	fs, err := ext4.Open(f, st.Size())
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return fs
}
