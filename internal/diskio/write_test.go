package diskio

import (
	"os"
	"path/filepath"
	"testing"
)

// TestWriteFile: the file is replaced whole with its mode, nothing else
// is left beside it, and a failed write leaves the old file.
func TestWriteFile(t *testing.T) {
	for _, durable := range []bool{false, true} {
		dir := t.TempDir()
		p := filepath.Join(dir, "doc.json")
		os.WriteFile(p, []byte("old"), 0o600)
		if err := WriteFile(p, []byte("new"), 0o644, durable); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		fi, _ := os.Stat(p)
		if string(b) != "new" || fi.Mode().Perm() != 0o644 {
			t.Errorf("durable=%v: %q %v", durable, b, fi.Mode())
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 1 {
			t.Errorf("durable=%v: left %v", durable, ents)
		}
		// The temporary name taken: refused, the file as it was.
		tmp := filepath.Join(dir, ".doc.json.tmp-x")
		os.WriteFile(tmp, nil, 0o644)
		if err := WriteFileVia(tmp, p, []byte("newer"), 0o644, durable); err == nil {
			t.Error("a temporary name that exists was written over")
		}
		if b, _ := os.ReadFile(p); string(b) != "new" {
			t.Errorf("after a failed write: %q", b)
		}
	}
	if err := SyncDir(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("SyncDir of a missing directory")
	}
}
