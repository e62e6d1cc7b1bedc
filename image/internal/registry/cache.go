package registry

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/image/internal/blob"
	"github.com/docker2vm/docker2vm/internal/cachedir"
	"github.com/docker2vm/docker2vm/internal/diskio"
	"github.com/docker2vm/docker2vm/internal/lock"
	"github.com/docker2vm/docker2vm/internal/units"
)

// blobCache is a content-addressed store: <root>/blobs/sha256/<hex>.
//
// Writes go to a temporary file (.tmp-*) in the same directory and are
// renamed into place only once their digest (and size) checked out, so a
// reader never sees a partial entry and two processes writing the same blob
// at once both succeed (the last rename wins; the contents are identical).
// A writer holds a lock (flock) on its temporary file while it writes, so
// the temporary files of killed runs are told apart from those of live
// ones: each use of the cache removes the dead ones. Every read hashes the
// entry before serving it; an entry that fails is deleted and reported as a
// miss, so the caller fetches it again, and so is anything at an entry's
// path that is not a regular file (a FIFO, a device, a directory). Nothing
// is ever evicted.
type blobCache struct {
	dir      string
	progress *blob.Progress
}

// TempPrefix starts the names of the cache's temporary files.
const TempPrefix = ".tmp-"

func newBlobCache(root string, p *blob.Progress) (*blobCache, error) {
	dir := cachedir.BlobsDir(root)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, hint.New(err, []string{"Pass --cache-dir with a writable directory, or --no-cache."}, "cannot create the blob cache %s", dir)
	}
	c := &blobCache{dir: dir, progress: p}
	c.reclaim()
	return c, nil
}

// reclaim removes the temporary files that no live process is writing:
// those left by killed runs. A writer locks its file right after creating
// it and checks that it is still there (see newWriter), so a file removed
// in between is not one it goes on writing.
func (c *blobCache) reclaim() {
	n, bytes := lock.ReclaimHeld(c.dir, func(name string) bool { return strings.HasPrefix(name, TempPrefix) })
	if n > 0 {
		c.progress.Printf("Blob cache: removed %d partial download(s) left by interrupted runs (%s)\n", n, units.Bytes(bytes))
	}
}

func (c *blobCache) path(h v1.Hash) string { return filepath.Join(c.dir, h.Hex) }

// get returns the verified entry for desc, open at offset 0, or ok=false on
// a miss. A corrupt entry is removed and reported as a miss, and so is
// anything at the entry's path that is not a regular file.
func (c *blobCache) get(ctx context.Context, desc v1.Descriptor) (f *os.File, ok bool, err error) {
	if desc.Digest.Algorithm != "sha256" {
		return nil, false, nil
	}
	p := c.path(desc.Digest)
	f, err = diskio.OpenRegular(p, os.O_RDONLY)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	var nr *diskio.NotRegularError
	if errors.As(err, &nr) {
		// Never opened (a FIFO would block, a device could be anything):
		// replace it.
		if rerr := os.RemoveAll(p); rerr != nil {
			return nil, false, hint.New(rerr, []string{"Remove it by hand, or pass --no-cache."}, "blob cache: %s is a %s, not a regular file, and cannot be removed", p, nr.Kind)
		}
		c.progress.Printf("Blob cache: replaced %s: it was a %s, not a regular file\n", desc.Digest, nr.Kind)
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("blob cache: %w", err)
	}
	// In use while open: pruning (internal/cachedir) leaves it alone.
	lock.TryShared(f)
	good, err := verifyFile(ctx, f, desc)
	if err != nil {
		f.Close()
		return nil, false, err
	}
	if !good {
		// Corrupt: drop it (only if it is still the file we checked;
		// a concurrent writer may have replaced it with a good one).
		st0, e0 := f.Stat()
		f.Close()
		if st1, e1 := os.Lstat(p); e0 == nil && e1 == nil && os.SameFile(st0, st1) {
			os.Remove(p)
		}
		return nil, false, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, false, err
	}
	now := time.Now()
	os.Chtimes(p, now, now) // its last use, for pruning
	return f, true, nil
}

// has reports whether the cache has an entry for desc of the right size,
// without verifying it (get does).
func (c *blobCache) has(desc v1.Descriptor) bool {
	if desc.Digest.Algorithm != "sha256" {
		return false
	}
	fi, err := os.Lstat(c.path(desc.Digest))
	return err == nil && fi.Mode().IsRegular() && (desc.Size <= 0 || fi.Size() == desc.Size)
}

func verifyFile(ctx context.Context, f *os.File, desc v1.Descriptor) (bool, error) {
	if desc.Size > 0 {
		fi, err := f.Stat()
		if err != nil {
			return false, err
		}
		if fi.Size() != desc.Size {
			return false, nil
		}
	}
	h := sha256.New()
	if _, err := blob.CopyCtx(ctx, h, f); err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return false, nil
	}
	return blob.HashOf(h) == desc.Digest, nil
}

// getBytes returns a small verified entry.
func (c *blobCache) getBytes(ctx context.Context, desc v1.Descriptor, limit int64) ([]byte, bool, error) {
	f, ok, err := c.get(ctx, desc)
	if !ok || err != nil {
		return nil, ok, err
	}
	defer f.Close()
	b, err := blob.ReadAll(f, limit, "cached blob "+desc.Digest.String())
	if err != nil {
		return nil, false, err
	}
	if blob.Sha256Of(b) != desc.Digest { // changed between verify and read
		return nil, false, nil
	}
	return b, true, nil
}

// put stores b under its digest atomically.
func (c *blobCache) put(b []byte) error {
	d := blob.Sha256Of(b)
	w, err := c.newWriter()
	if err != nil {
		return err
	}
	if _, err := w.f.Write(b); err != nil {
		w.abort()
		return fmt.Errorf("blob cache: %w", err)
	}
	return w.commit(d)
}

type cacheWriter struct {
	c *blobCache
	f *os.File
}

// newWriter creates a temporary file and locks it for as long as it is
// open: a run that reclaims temporary files (reclaim) leaves it alone.
func (c *blobCache) newWriter() (*cacheWriter, error) {
	for range 3 {
		f, err := os.CreateTemp(c.dir, TempPrefix+"*")
		if err != nil {
			return nil, fmt.Errorf("blob cache: %w", err)
		}
		ok, err := lock.TryFile(f)
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			return nil, fmt.Errorf("blob cache: %w", err)
		}
		// Between CreateTemp and the lock another run may have taken the
		// file for a dead one's: then it holds the lock, or has removed
		// the file. Take another.
		if ok {
			fi, err1 := f.Stat()
			li, err2 := os.Lstat(f.Name())
			if err1 == nil && err2 == nil && os.SameFile(fi, li) {
				return &cacheWriter{c: c, f: f}, nil
			}
		}
		f.Close()
	}
	return nil, errors.New("blob cache: cannot create a temporary file that stays put")
}

func (w *cacheWriter) abort() {
	w.f.Close()
	os.Remove(w.f.Name())
}

func (w *cacheWriter) commit(d v1.Hash) error {
	if err := w.f.Close(); err != nil {
		os.Remove(w.f.Name())
		return fmt.Errorf("blob cache: %w", err)
	}
	if err := w.c.place(w.f.Name(), d); err != nil {
		os.Remove(w.f.Name())
		return err
	}
	return nil
}

// publish renames the temporary file, whose bytes the caller verified,
// into place as the entry for d, and keeps it open (and locked: in use)
// for the caller, who closes w.f.
func (w *cacheWriter) publish(d v1.Hash) error {
	return w.c.place(w.f.Name(), d)
}

// place renames tmp into place as the entry for d. Whatever is at the
// entry's path and is not a regular file (a directory, which rename cannot
// replace, a FIFO, a device) was never an entry: it is removed first, so
// that it does not make every later download of d uncacheable.
func (c *blobCache) place(tmp string, d v1.Hash) error {
	p := c.path(d)
	if fi, err := os.Lstat(p); err == nil && !fi.Mode().IsRegular() {
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("blob cache: %s is a %s, not a regular file, and cannot be removed: %w", p, diskio.Kind(fi.Mode()), err)
		}
		c.progress.Printf("Blob cache: replaced %s: it was a %s, not a regular file\n", d, diskio.Kind(fi.Mode()))
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("blob cache: %w", err)
	}
	return nil
}

// tee returns a reader that passes rc through while writing it to the
// cache; the entry is committed when rc reaches EOF with the digest and size
// of desc, and discarded otherwise (error, mismatch, or Close before EOF).
// Failing to write the cache never fails the read.
func (c *blobCache) tee(rc io.ReadCloser, desc v1.Descriptor) io.ReadCloser {
	w, err := c.newWriter()
	if err != nil {
		return rc
	}
	return &teeReader{rc: rc, w: w, h: sha256.New(), desc: desc}
}

type teeReader struct {
	rc   io.ReadCloser
	w    *cacheWriter // nil once committed or dropped
	h    hash.Hash
	n    int64
	desc v1.Descriptor
}

func (t *teeReader) Read(p []byte) (int, error) {
	n, err := t.rc.Read(p)
	if n > 0 && t.w != nil {
		t.h.Write(p[:n])
		t.n += int64(n)
		if _, werr := t.w.f.Write(p[:n]); werr != nil {
			t.drop()
		}
	}
	if t.w != nil {
		switch {
		case err == io.EOF:
			if (t.desc.Size <= 0 || t.n == t.desc.Size) && blob.HashOf(t.h) == t.desc.Digest {
				t.w.commit(t.desc.Digest)
				t.w = nil
			} else {
				t.drop()
			}
		case err != nil:
			t.drop()
		}
	}
	return n, err
}

func (t *teeReader) drop() {
	if t.w != nil {
		t.w.abort()
		t.w = nil
	}
}

func (t *teeReader) Close() error {
	t.drop()
	return t.rc.Close()
}
