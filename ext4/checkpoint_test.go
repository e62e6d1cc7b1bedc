package ext4

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/docker2vm/docker2vm/fstree"
)

// checkpointPhases are Puts and Releases in two parts, the first leaving
// released runs for the second to reuse.
func checkpointPhases(t *testing.T) (first, second func(w *Writer, tr *fstree.Tree)) {
	first = func(w *Writer, tr *fstree.Tree) {
		add(tr, "a/big", file(t, w, bytes.Repeat([]byte("big!"), 300*blockSize/4), 0o644))
		add(tr, "a/small", file(t, w, []byte("small"), 0o600))
		add(tr, "a/hole", file(t, w, append(make([]byte, 3*blockSize), 'x'), 0o644))
		add(tr, "gone", file(t, w, bytes.Repeat([]byte("old."), 50*blockSize/4), 0o644))
		fstree.Link(tr.Root, "hard", mustLookup(t, tr, "a/small"), nil)
		fstree.Unlink(tr.Root, "gone", w.Release)
	}
	second = func(w *Writer, tr *fstree.Tree) {
		add(tr, "b/reuses", file(t, w, bytes.Repeat([]byte("new."), 20*blockSize/4), 0o644))
		add(tr, "b/fresh", file(t, w, bytes.Repeat([]byte("more"), 40*blockSize/4), 0o644))
		fstree.Unlink(mustLookup(t, tr, "a"), "big", w.Release)
		add(tr, "c", file(t, w, bytes.Repeat([]byte("last"), 100*blockSize/4), 0o644))
	}
	return first, second
}

func mustLookup(t *testing.T, tr *fstree.Tree, p string) *fstree.Inode {
	n, ok := tr.Lookup(p)
	if !ok {
		t.Fatalf("no %s", p)
	}
	return n
}

func finishTo(t *testing.T, f *os.File, w *Writer, tr *fstree.Tree) [32]byte {
	if err := w.Finish(context.Background(), tr); err != nil {
		t.Fatal(err)
	}
	f.Seek(0, io.SeekStart)
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

// TestCheckpointResume: a Writer stopped after some Puts and Releases,
// its file copied, its state checkpointed and its tree encoded, and
// resumed from those, makes the image an uninterrupted Writer makes.
func TestCheckpointResume(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SourceDateEpoch: sde}
	first, second := checkpointPhases(t)

	cold, err := os.Create(filepath.Join(dir, "cold"))
	if err != nil {
		t.Fatal(err)
	}
	defer cold.Close()
	w, _ := NewWriter(cold, opts)
	tr := fstree.New()
	first(w, tr)
	second(w, tr)
	want := finishTo(t, cold, w, tr)

	part, err := os.Create(filepath.Join(dir, "part"))
	if err != nil {
		t.Fatal(err)
	}
	defer part.Close()
	w1, _ := NewWriter(part, opts)
	tr1 := fstree.New()
	first(w1, tr1)
	cp, err := w1.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	var enc bytes.Buffer
	if err := fstree.Encode(&enc, tr1, w1.EncodeContent); err != nil {
		t.Fatal(err)
	}
	resumed, err := os.Create(filepath.Join(dir, "resumed"))
	if err != nil {
		t.Fatal(err)
	}
	defer resumed.Close()
	part.Seek(0, io.SeekStart)
	if _, err := io.Copy(resumed, part); err != nil {
		t.Fatal(err)
	}
	w2, err := Resume(resumed, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := w2.Restore(cp); err != nil {
		t.Fatal(err)
	}
	tr2, err := fstree.Decode(&enc, w2.DecodeContent)
	if err != nil {
		t.Fatal(err)
	}
	second(w2, tr2)
	if got := finishTo(t, resumed, w2, tr2); got != want {
		t.Fatal("the resumed writer made another image than the uninterrupted one")
	}
}

// TestCheckpointRefused: a checkpoint or content record that does not
// fit the Writer is an ErrCheckpoint error.
func TestCheckpointRefused(t *testing.T) {
	dir := t.TempDir()
	f, _ := os.Create(filepath.Join(dir, "img"))
	defer f.Close()
	w, _ := NewWriter(f, Options{})
	c, err := w.Put(context.Background(), bytes.NewReader(bytes.Repeat([]byte("x"), 3*blockSize)), 3*blockSize)
	if err != nil {
		t.Fatal(err)
	}
	cp, _ := w.Checkpoint()
	rec, err := w.EncodeContent(c)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewWriter(f, Options{Size: 64 << 20})
	if err := other.Restore(cp); !errors.Is(err, ErrCheckpoint) {
		t.Errorf("a checkpoint of a writer with another size: %v", err)
	}
	fresh := func() *Writer { w, _ := Resume(f, Options{}); return w }
	for n := 0; n < len(cp); n++ {
		if err := fresh().Restore(cp[:n]); !errors.Is(err, ErrCheckpoint) {
			t.Fatalf("checkpoint cut to %d bytes: %v", n, err)
		}
	}
	if err := fresh().Restore(append(append([]byte{}, cp...), 0)); !errors.Is(err, ErrCheckpoint) {
		t.Errorf("trailing byte: %v", err)
	}
	// Before Restore, the extents lie beyond what the writer handed out.
	if _, err := fresh().DecodeContent(rec); !errors.Is(err, ErrCheckpoint) {
		t.Errorf("content beyond the writer's blocks: %v", err)
	}
	w2 := fresh()
	if err := w2.Restore(cp); err != nil {
		t.Fatal(err)
	}
	if c2, err := w2.DecodeContent(rec); err != nil || c2.Size() != 3*blockSize {
		t.Errorf("DecodeContent = %v, %v", c2, err)
	}
	for n := 0; n < len(rec); n++ {
		if _, err := w2.DecodeContent(rec[:n]); !errors.Is(err, ErrCheckpoint) {
			t.Fatalf("content record cut to %d bytes: %v", n, err)
		}
	}
	w.Release(c)
	if _, err := w.EncodeContent(c); err == nil {
		t.Error("EncodeContent of released content")
	}
	if _, err := w2.EncodeContent(c); err == nil {
		t.Error("EncodeContent of another writer's content")
	}
}

// FuzzCheckpoint: whatever the bytes, Restore and DecodeContent return an
// ErrCheckpoint error or a state and content that stay in range; never a
// panic.
func FuzzCheckpoint(f *testing.F) {
	img, err := os.Create(filepath.Join(f.TempDir(), "img"))
	if err != nil {
		f.Fatal(err)
	}
	defer img.Close()
	w, _ := NewWriter(img, Options{})
	c, _ := w.Put(context.Background(), bytes.NewReader(bytes.Repeat([]byte("x"), 3*blockSize)), 3*blockSize)
	cp, _ := w.Checkpoint()
	rec, _ := w.EncodeContent(c)
	f.Add(cp, rec)
	f.Fuzz(func(t *testing.T, cp, rec []byte) {
		w, _ := Resume(img, Options{})
		if err := w.Restore(cp); err != nil && !errors.Is(err, ErrCheckpoint) {
			t.Fatalf("Restore: %v", err)
		}
		c, err := w.DecodeContent(rec)
		if err != nil {
			if !errors.Is(err, ErrCheckpoint) {
				t.Fatalf("DecodeContent: %v", err)
			}
			return
		}
		for _, e := range c.(*content).extents() {
			if e.phys+uint64(e.len) > w.alloc.next {
				t.Fatalf("extent %+v beyond block %d", e, w.alloc.next)
			}
		}
	})
}

// TestCheckpointBounds: the blocks a checkpoint has handed out may reach
// the image's size, --size's when it is set (beyond the automatic size's
// bound), never past it.
func TestCheckpointBounds(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	state := func(w *Writer, next uint64) []byte {
		b := []byte(checkpointMagic)
		for _, v := range []uint64{next, w.alloc.resv, w.alloc.limit, 0} {
			b = binary.AppendUvarint(b, v)
		}
		return b
	}
	auto := uint64(maxAutoBytes / blockSize)
	for _, tc := range []struct {
		size int64
		next uint64
		ok   bool
	}{
		{0, auto, true},
		{0, auto + 1, false},
		{4 << 40, auto + 1, true},
		{4 << 40, 4 << 40 / blockSize, true},
		{4 << 40, 4<<40/blockSize + 1, false},
		{64 << 20, 64<<20/blockSize + 1, false},
	} {
		w, err := Resume(f, Options{Size: tc.size})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Restore(state(w, tc.next)); (err == nil) != tc.ok || err != nil && !errors.Is(err, ErrCheckpoint) {
			t.Errorf("size %d, next block %d: %v, want ok %v", tc.size, tc.next, err, tc.ok)
		}
	}
}
