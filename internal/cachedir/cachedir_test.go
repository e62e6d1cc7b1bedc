package cachedir

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker2vm/docker2vm/internal/lock"
)

// fill makes a cache with blobs and results of the given sizes, each last
// used at the given age (in hours).
func fill(t *testing.T, root string, kind, id string, size int, ageHours int) string {
	t.Helper()
	var p, stamp string
	switch kind {
	case "blob":
		p = filepath.Join(BlobsDir(root), id)
		stamp = p
		os.MkdirAll(BlobsDir(root), 0o755)
		if err := os.WriteFile(p, []byte(strings.Repeat("b", size)), 0o644); err != nil {
			t.Fatal(err)
		}
	case "result":
		p = filepath.Join(ResultsDir(root), id)
		stamp = filepath.Join(p, ResultFile)
		os.MkdirAll(filepath.Join(p, "outputs"), 0o755)
		os.WriteFile(filepath.Join(p, "rootfs.ext4"), []byte(strings.Repeat("r", size)), 0o644)
		os.WriteFile(stamp, []byte("{}"), 0o644)
	case "prefix":
		p = filepath.Join(PrefixesDir(root), id)
		stamp = filepath.Join(p, PrefixFile)
		os.MkdirAll(p, 0o755)
		os.WriteFile(filepath.Join(p, "rootfs.part"), []byte(strings.Repeat("p", size)), 0o644)
		os.WriteFile(stamp, []byte("{}"), 0o644)
	}
	when := time.Now().Add(-time.Duration(ageHours) * time.Hour)
	os.Chtimes(stamp, when, when)
	return p
}

func ids(es []Entry) string {
	var s []string
	for _, e := range es {
		s = append(s, e.ID)
	}
	return strings.Join(s, " ")
}

func TestListAndTrim(t *testing.T) {
	root := t.TempDir()
	fill(t, root, "blob", "aaa", 40000, 5)
	fill(t, root, "result", "k1", 80000, 4)
	fill(t, root, "blob", "bbb", 40000, 1)
	busy := fill(t, root, "blob", "ccc", 40000, 10) // oldest, but in use
	fill(t, root, "result", "k2", 40000, 0)
	fill(t, root, "prefix", "p1", 40000, 3)
	// Litter that the caches reclaim themselves: not entries.
	os.WriteFile(filepath.Join(BlobsDir(root), ".tmp-123"), []byte("x"), 0o644)
	os.MkdirAll(filepath.Join(ResultsDir(root), ".tmp-9"), 0o755)
	os.MkdirAll(filepath.Join(ResultsDir(root), "no-result-json"), 0o755)
	os.MkdirAll(filepath.Join(PrefixesDir(root), ".tmp-7"), 0o755)
	os.MkdirAll(filepath.Join(PrefixesDir(root), "no-prefix-json"), 0o755)

	es, err := List(root)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(es); got != "sha256:ccc sha256:aaa k1 p1 sha256:bbb k2" {
		t.Fatalf("List order %q", got)
	}
	for _, e := range es {
		if e.Bytes < 40000 {
			t.Errorf("%s: %d bytes on disk", e.ID, e.Bytes)
		}
	}

	f, err := os.Open(busy)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if ok, err := lock.TryShared(f); err != nil || !ok {
		t.Fatal("shared lock", err)
	}
	total := Total(es)
	// A dry run names the same entries and removes nothing.
	dry, err := Trim(root, total-140000, true)
	if err != nil {
		t.Fatal(err)
	}
	if ids(dry.Entries) != "sha256:aaa k1 p1" || dry.Busy != 1 {
		t.Errorf("dry Trim would remove %q, busy %d", ids(dry.Entries), dry.Busy)
	}
	if again, _ := List(root); ids(again) != ids(es) {
		t.Errorf("a dry Trim removed entries: %q", ids(again))
	}
	r, err := Trim(root, total-140000, false) // needs aaa, k1 and p1 gone (ccc is busy)
	if err != nil {
		t.Fatal(err)
	}
	if ids(r.Entries) != "sha256:aaa k1 p1" || r.Busy != 1 {
		t.Errorf("Trim removed %q, busy %d", ids(r.Entries), r.Busy)
	}
	if _, err := os.Stat(busy); err != nil {
		t.Error("an entry in use was removed")
	}
	if _, err := os.Stat(filepath.Join(ResultsDir(root), "k1")); !os.IsNotExist(err) {
		t.Error("result k1 still there")
	}
	if _, err := os.Stat(filepath.Join(PrefixesDir(root), "p1")); !os.IsNotExist(err) {
		t.Error("prefix p1 still there")
	}
	if trash, _ := filepath.Glob(filepath.Join(PrefixesDir(root), ".trash-*")); len(trash) != 0 {
		t.Errorf("trash left: %v", trash)
	}
	left, _ := List(root)
	if ids(left) != "sha256:ccc sha256:bbb k2" {
		t.Errorf("left %q", ids(left))
	}
	f.Close()
	r, _ = RemoveAll(root)
	if len(r.Entries) != 3 {
		t.Errorf("RemoveAll removed %q", ids(r.Entries))
	}
	if es, _ := List(root); len(es) != 0 {
		t.Errorf("after RemoveAll: %q", ids(es))
	}
	if es, err := List(filepath.Join(root, "missing")); err != nil || len(es) != 0 {
		t.Errorf("a missing cache: %v %v", es, err)
	}
}

// TestListLabels: a result entry shows the image it was converted from,
// and a blob the images whose results name it as a layer; an unreadable or
// hostile result.json says nothing.
func TestListLabels(t *testing.T) {
	root := t.TempDir()
	fill(t, root, "blob", "aaa", 10, 3)
	fill(t, root, "blob", "bbb", 10, 2)
	fill(t, root, "blob", "ccc", 10, 1)
	k1 := fill(t, root, "result", "k1", 10, 1)
	k2 := fill(t, root, "result", "k2", 10, 1)
	k3 := fill(t, root, "result", "k3", 10, 1)
	os.WriteFile(filepath.Join(k1, ResultFile), []byte(`{"key":"k1","image":"alpine:3.20","platform":"linux/amd64","layers":["sha256:aaa","sha256:bbb"]}`), 0o644)
	os.WriteFile(filepath.Join(k2, ResultFile), []byte(`{"image":"app:1","platform":"linux/arm64","layers":["sha256:aaa"]}`), 0o644)
	os.WriteFile(filepath.Join(k3, ResultFile), []byte(`not json`), 0o644)
	p1 := fill(t, root, "prefix", "p1", 10, 1)
	os.WriteFile(filepath.Join(p1, PrefixFile), []byte(`{"image":"app:2","platform":"linux/amd64","layers":["sha256:ccc"],"prefix":1}`), 0o644)
	es, err := List(root)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"sha256:aaa": "layer of alpine:3.20, app:1",
		"sha256:bbb": "layer of alpine:3.20",
		"sha256:ccc": "layer of app:2",
		"p1":         "layers 1-1 of app:2 linux/amd64",
		"k1":         "alpine:3.20 linux/amd64",
		"k2":         "app:1 linux/arm64",
		"k3":         "",
	}
	for _, e := range es {
		if e.Of != want[e.ID] {
			t.Errorf("%s: Of %q, want %q", e.ID, e.Of, want[e.ID])
		}
	}
}
