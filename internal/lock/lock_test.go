package lock

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestTryAndAcquire(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.lock")
	if Held(p) {
		t.Fatal("Held on a missing file")
	}
	a, err := Try(p)
	if err != nil {
		t.Fatal(err)
	}
	// flock locks belong to the open file: a second open in the same
	// process conflicts, like another process would.
	if _, err := Try(p); !errors.Is(err, ErrHeld) {
		t.Fatalf("second Try: %v, want ErrHeld", err)
	}
	if !Held(p) {
		t.Error("Held = false while locked")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	waited := false
	if _, err := Acquire(ctx, p, func() { waited = true }); !errors.Is(err, context.DeadlineExceeded) || !waited {
		t.Fatalf("Acquire while held: %v (waited %v)", err, waited)
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		a.Unlock()
	}()
	b, err := Acquire(context.Background(), p, nil)
	if err != nil {
		t.Fatalf("Acquire after unlock: %v", err)
	}
	b.Unlock()
	if Held(p) {
		t.Error("Held after unlock")
	}
}

// TestReleasedWhenOwnerDies: a killed holder's lock is free at once.
func TestReleasedWhenOwnerDies(t *testing.T) {
	if os.Getenv("LOCK_TEST_CHILD") != "" {
		if _, err := Try(os.Getenv("LOCK_TEST_CHILD")); err != nil {
			os.Exit(3)
		}
		os.Stdout.WriteString("locked\n")
		time.Sleep(time.Minute)
		return
	}
	p := filepath.Join(t.TempDir(), "x.lock")
	cmd := exec.Command(os.Args[0], "-test.run=^TestReleasedWhenOwnerDies$")
	cmd.Env = append(os.Environ(), "LOCK_TEST_CHILD="+p)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _ := out.Read(buf)
	if !strings.Contains(string(buf[:n]), "locked") {
		cmd.Process.Kill()
		t.Fatalf("child: %q", buf[:n])
	}
	if !Held(p) {
		t.Error("the child's lock is not seen")
	}
	cmd.Process.Kill()
	cmd.Wait()
	if Held(p) {
		t.Error("lock still held after its owner was killed")
	}
}

// TestRemoveHandsOver: a holder that removes its lock file hands the lock
// to one waiter at a time, never to two.
func TestRemoveHandsOver(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.lock")
	a, err := Try(p)
	if err != nil {
		t.Fatal(err)
	}
	// A waiter that opened the old file before it was removed.
	old, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := a.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatalf("lock file left after Remove: %v", err)
	}
	b, err := Try(p)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Remove()
	if _, err := Try(p); !errors.Is(err, ErrHeld) {
		t.Fatalf("a second lock on the new file: %v", err)
	}
	// The old, unlinked file can be flocked, but Try never hands it out:
	// it checks that the path still names the file it locked.
	if ok, err := tryLock(old); err != nil || !ok {
		t.Fatalf("flock of the unlinked file: %v %v", ok, err)
	}
	if !Held(p) {
		t.Error("the new holder's lock is not seen")
	}
}

func TestTryFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "partial")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	ok, err := TryFile(f)
	if err != nil || !ok {
		t.Fatalf("TryFile on a fresh file = %v, %v", ok, err)
	}
	if !Held(p) {
		t.Error("Held = false while the writer holds its file")
	}
	g, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if ok, err := TryFile(g); err != nil || ok {
		t.Errorf("TryFile on a second open of a held file = %v, %v", ok, err)
	}
	f.Close()
	if Held(p) {
		t.Error("Held after the writer closed its file")
	}
	if ok, err := TryFile(g); err != nil || !ok {
		t.Errorf("TryFile after the writer closed = %v, %v", ok, err)
	}
}
