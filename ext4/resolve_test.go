package ext4

import (
	"io"
	"strings"
	"testing"

	"github.com/docker2vm/docker2vm/fstree"
	"github.com/docker2vm/docker2vm/internal/confine"
)

// TestReaderResolve: paths resolve inside the image by confine's rules
// (confine's own tests cover them all); these pin what the reader's own
// walk did differently before it used confine.
func TestReaderResolve(t *testing.T) {
	img := writeImage(t, Options{Size: 1 << 20, NoJournal: true}, func(w *Writer) *fstree.Tree {
		tr := fstree.New()
		add(tr, "usr/lib/libz.so.1.2", file(t, w, []byte("zlib"), 0o644))
		link := func(p, target string) {
			add(tr, p, &fstree.Inode{Type: fstree.TypeSymlink, Mode: 0o777, Target: target})
		}
		link("usr/lib/libz.so.1", "libz.so.1.2")
		link("lib", "usr/lib")
		link("l1", "l2") // a chain whose last hop is itself a symlink
		link("l2", "/usr/lib")
		link("empty", "")
		link("up", "../../../usr")
		link("loop", "loop/x")
		return tr
	})
	fsys := openImage(t, img)
	for _, tc := range []struct {
		p, want string // want: the file's content, or an error substring
	}{
		{"lib/libz.so.1", "zlib"},
		{"l1/libz.so.1", "zlib"},
		{"up/lib/libz.so.1.2", "zlib"},
		{"/../../lib/libz.so.1", "zlib"},
		{"empty/x", "empty target"}, // was the symlink's own directory
		{"loop/y", "too many levels of symbolic links"},
		{"lib/nope", "file does not exist"},
	} {
		r, err := fsys.Open(tc.p)
		got := ""
		if err == nil {
			b, _ := io.ReadAll(r)
			got = string(b)
		} else {
			got = err.Error()
		}
		if !strings.Contains(got, tc.want) {
			t.Errorf("Open(%q): %q, want %q", tc.p, got, tc.want)
		}
	}
	if _, err := fsys.Lookup("empty/x"); !errorsIs(err, confine.ErrEmptyTarget) || !errorsIs(err, ErrNotExist) {
		t.Errorf("empty target: %v", err)
	}
	if n, err := fsys.Lookup("lib/libz.so.1"); err != nil || n.Type != fstree.TypeSymlink {
		t.Errorf("Lookup does not follow the final symlink: %+v %v", n, err)
	}
	// Lookup follows l1 in the middle, then l2, the last hop of l1's
	// target (it used to stop there: "not a directory").
	if n, err := fsys.Lookup("l1/libz.so.1"); err != nil || n.Type != fstree.TypeSymlink {
		t.Errorf("Lookup through a chain: %+v %v", n, err)
	}
}
