package lock

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
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

// TestReclaimHeld: of the matching regular files, those whose own lock is
// free go; a held one, a FIFO, a directory and what does not match stay.
func TestReclaimHeld(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	held, err := os.OpenFile(write("tmp-held", "live"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if ok, err := TryFile(held); !ok || err != nil {
		t.Fatalf("TryFile: %v %v", ok, err)
	}
	write("tmp-dead", "left by a killed run")
	write("other", "not ours")
	os.Mkdir(filepath.Join(dir, "tmp-dir"), 0o755)
	if err := syscall.Mkfifo(filepath.Join(dir, "tmp-fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	n, bytes := ReclaimHeld(dir, func(name string) bool { return strings.HasPrefix(name, "tmp-") })
	if n != 1 || bytes != int64(len("left by a killed run")) {
		t.Errorf("removed %d (%d bytes), want the one dead file", n, bytes)
	}
	ents, _ := os.ReadDir(dir)
	var left []string
	for _, e := range ents {
		left = append(left, e.Name())
	}
	if strings.Join(left, " ") != "other tmp-dir tmp-fifo tmp-held" {
		t.Errorf("left %v", left)
	}
}
