package lock

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestReclaim: entries whose writer holds their claim stay; those of dead
// writers (no claim, or a claim nobody holds) go, with their lock files.
func TestReclaim(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string, isDir bool) {
		p := filepath.Join(dir, name)
		var err error
		if isDir {
			err = os.MkdirAll(filepath.Join(p, "sub"), 0o755)
		} else {
			err = os.WriteFile(p, []byte("x"), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	live, err := Claim(filepath.Join(dir, ".tmp-live"))
	if err != nil {
		t.Fatal(err)
	}
	defer live.Remove()
	mk(".tmp-live", true)
	mk(".tmp-dead-dir", true) // no claim at all
	mk(".tmp-dead-file.tar.gz", false)
	mk(".tmp-unheld", false) // a claim file nobody holds
	os.WriteFile(filepath.Join(dir, ".tmp-unheld.lock"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, ".tmp-orphan.lock"), nil, 0o644) // a lock without its entry
	mk("kept", false)                                                // not a temporary name
	if n := Reclaim(dir, ".tmp-"); n != 3 {
		t.Errorf("Reclaim removed %d entries, want 3", n)
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{".tmp-live", ".tmp-live.lock", "kept"}; !slices.Equal(names, want) {
		t.Fatalf("left %v, want %v", names, want)
	}
	// Held by another process, the entry stays too.
	other := filepath.Join(dir, ".tmp-other")
	mk(".tmp-other", false)
	if _, err := exec.LookPath("flock"); err == nil {
		cmd := exec.Command("flock", other+".lock", "sleep", "5")
		if err := cmd.Start(); err == nil {
			defer cmd.Process.Kill()
			for i := 0; i < 100 && !Held(other+".lock"); i++ {
				sleepBriefly()
			}
			if Reclaim(dir, ".tmp-") != 0 {
				t.Error("an entry another process claims was removed")
			}
		}
	}
}

func sleepBriefly() { time.Sleep(20 * time.Millisecond) }
