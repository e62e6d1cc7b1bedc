package archive

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestArchiveLookup: members are found as in the tree the archive extracts
// to, by confine's rules (its tests cover them all). The comments say
// where the index's own lookup differed before it used confine.
func TestArchiveLookup(t *testing.T) {
	type ent struct {
		name string
		typ  byte
		link string
	}
	ents := []ent{
		{name: "index.json"},
		{name: "store/sha256/aa"},
		{name: "blobs", typ: tar.TypeSymlink, link: "store"}, // a symlinked directory
		{name: "dir\\win"},                                   // a name made on Windows
		{name: "x/layer.tar"},
		{name: "y/layer.tar", typ: tar.TypeSymlink, link: "../x/layer.tar"},
		{name: "abs", typ: tar.TypeSymlink, link: "/../../index.json"},
		{name: "up", typ: tar.TypeSymlink, link: "../../../x"},
		{name: "hard", typ: tar.TypeLink, link: "./y/layer.tar"},
		{name: "empty", typ: tar.TypeSymlink},
		{name: "loop", typ: tar.TypeSymlink, link: "loop"},
		{name: "a", typ: tar.TypeSymlink, link: "b"},
		{name: "a/shadowed"},
		{name: "dd", typ: tar.TypeSymlink, link: "nodir/../index.json"},
	}
	for i := range 40 { // a chain of 40 hops: Linux's limit
		next := "index.json"
		if i < 39 {
			next = fmt.Sprintf("c%02d", i+1)
		}
		ents = append(ents, ent{name: fmt.Sprintf("c%02d", i), typ: tar.TypeSymlink, link: next})
	}
	p := filepath.Join(t.TempDir(), "a.tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: 0o644}
		body := ""
		if e.typ == 0 {
			h.Typeflag, body = tar.TypeReg, "member "+e.name
			h.Size = int64(len(body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	tw.Close()
	f.Close()
	f, err = os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	tf, err := indexTar(context.Background(), f, p)
	if err != nil {
		t.Fatal(err)
	}
	defer tf.Close()
	for _, tc := range []struct{ name, want string }{ // want: the member read, "" for none
		{"index.json", "index.json"},
		{"./index.json", "index.json"},
		{"/../index.json", "index.json"},
		{"blobs/sha256/aa", "store/sha256/aa"}, // was not found: directories were not followed
		{"dir/win", "dir\\win"},
		{"dir\\win", "dir\\win"},
		{"y/layer.tar", "x/layer.tar"},
		{"abs", "index.json"},
		{"up/layer.tar", "x/layer.tar"}, // was not found, as blobs/sha256/aa
		{"hard", "x/layer.tar"},
		{"c00", "index.json"}, // was not found: the index stopped after 16 hops
		{"empty", ""},
		{"loop", ""},
		{"store", ""},      // a directory is not a member
		{"a/shadowed", ""}, // was found: it is under the symlink a, as on a filesystem
		{"dd", ""},         // was index.json: "nodir/.." was cleaned away, the kernel needs nodir
		{"missing", ""},
	} {
		sr, ok := tf.Section(tc.name)
		got := ""
		if ok {
			b, _ := io.ReadAll(sr)
			got = strings.TrimPrefix(string(b), "member ")
		}
		if got != tc.want {
			t.Errorf("Section(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
}
