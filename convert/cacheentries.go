package convert

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker2vm/docker2vm/gondolin"
	"github.com/docker2vm/docker2vm/internal/cachedir"
	"github.com/docker2vm/docker2vm/internal/diskio"
	"github.com/docker2vm/docker2vm/internal/lock"
)

// cacheInputs is what the result and prefix caches' keys share: the cache
// root, the running executable's sha256 and the base's identity (nil for
// --plain). ok is false when one cannot be had: the cache is then off for
// the run (why goes to progress, headed by what).
func cacheInputs(ctx context.Context, opts Options, base *gondolin.Base, what string, progress func(string, ...any)) (root, exe string, id *gondolin.BaseIdentity, ok bool) {
	root, err := opts.Image.CacheRoot()
	if err != nil {
		return "", "", nil, false
	}
	exe, err = executableHash()
	if err != nil {
		progress("%s off: cannot hash the running executable: %v", what, err)
		return "", "", nil, false
	}
	if base != nil {
		v, err := base.Identity(ctx)
		if err != nil {
			progress("%s off: %v", what, err)
			return "", "", nil, false
		}
		id = &v
	}
	return root, exe, id, true
}

// entryDirs is what the result and prefix caches share: a directory of
// entries, each a directory named by its key whose record file (its last
// use for pruning: internal/cachedir) is written last. An entry is built
// in a temporary directory, owned by a lock taken before it is made, and
// renamed into place whole; one found damaged is renamed away before it is
// deleted, so that no reader sees half an entry.
type entryDirs struct {
	dir      string // <CacheDir>/results, <CacheDir>/prefixes
	record   string // the record file's name
	what     string // "result cache", for messages
	progress func(string, ...any)
}

func (d entryDirs) path(key string) string { return filepath.Join(d.dir, key) }

// isDir reports whether key's entry is a real directory: never a symlink,
// which could lead reads and writes out of the cache.
func (d entryDirs) isDir(key string) bool {
	fi, err := os.Lstat(d.path(key))
	return err == nil && fi.IsDir()
}

// complete reports whether key's entry is a directory with its record.
func (d entryDirs) complete(key string) bool {
	_, err := os.Stat(filepath.Join(d.path(key), d.record))
	return err == nil && d.isDir(key)
}

// readRecord reads the record of the entry in dir (key's, or one this run
// owns) into v: a regular file only (a FIFO or device planted there is
// not read), at most cachedir.MaxRecord bytes. The file stays open, with
// a shared lock on it that tells pruning the entry is in use, until the
// caller closes it.
func (d entryDirs) readRecord(dir string, v any) (*os.File, error) {
	rf, err := diskio.OpenRegular(filepath.Join(dir, d.record), os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	lock.TryShared(rf)
	b, err := io.ReadAll(io.LimitReader(rf, cachedir.MaxRecord))
	if err == nil {
		err = json.Unmarshal(b, v)
	}
	if err != nil {
		rf.Close()
		return nil, err
	}
	return rf, nil
}

// touch records the entry's use, for pruning (its record's time).
func (d entryDirs) touch(key string) {
	now := time.Now()
	os.Chtimes(filepath.Join(d.path(key), d.record), now, now)
}

// begin makes a temporary directory for a new entry, owned by this run
// until done is called (which removes what was not published).
func (d entryDirs) begin() (tmp string, done func(), err error) {
	if err := os.MkdirAll(d.dir, 0o755); err != nil {
		return "", nil, err
	}
	d.reclaim()
	// The lock first, then the directory it owns (see reclaim).
	lf, err := os.CreateTemp(d.dir, ".tmp-*.lock")
	if err != nil {
		return "", nil, err
	}
	lf.Close()
	l, err := lock.Try(lf.Name())
	if err != nil {
		os.Remove(lf.Name())
		return "", nil, err
	}
	tmp = strings.TrimSuffix(lf.Name(), ".lock")
	if err := os.Mkdir(tmp, 0o755); err != nil {
		l.Remove()
		return "", nil, err
	}
	return tmp, func() { os.RemoveAll(tmp); l.Remove() }, nil
}

// publish renames tmp, a complete entry, into place as key's. Losing the
// race to another run's identical entry is success.
func (d entryDirs) publish(tmp, key string) error {
	if err := os.Rename(tmp, d.path(key)); err != nil {
		if d.complete(key) {
			return nil
		}
		return err
	}
	return nil
}

// clearDebris removes what stands where key's entry goes without being
// one (a symlink, a file, a directory without its record: a failed or
// interrupted store), so that it does not block the key for good. It
// reports whether a complete entry is there.
func (d entryDirs) clearDebris(key string) bool {
	if _, err := os.Lstat(d.path(key)); err != nil {
		return false
	}
	if d.complete(key) {
		return true
	}
	d.drop(key, "was incomplete (a failed or interrupted store)")
	return false
}

// reclaim removes what killed runs left: begin's .tmp-X directories whose
// .tmp-X.lock no live process holds (begin takes the lock before it
// creates the directory, so a directory without a held lock has no
// owner), and drop's .trash-* directories.
func (d entryDirs) reclaim() {
	lock.Reclaim(d.dir, ".tmp-")
	if trash, err := filepath.Glob(filepath.Join(d.dir, ".trash-*")); err == nil {
		for _, p := range trash {
			os.RemoveAll(p)
		}
	}
}

// report says that key's entry is removed, and why.
func (d entryDirs) report(key, why string) {
	if d.progress != nil {
		d.progress("%s: the entry %s %s and was removed", d.what, key[:min(16, len(key))], why)
	}
}

// drop deletes key's entry: renamed away first, so that no reader sees it
// half deleted.
func (d entryDirs) drop(key, why string) {
	d.report(key, why)
	dir := d.path(key)
	trash, err := os.MkdirTemp(d.dir, ".trash-")
	if err != nil {
		os.RemoveAll(dir)
		return
	}
	if err := os.Rename(dir, filepath.Join(trash, "entry")); err != nil && !errors.Is(err, os.ErrNotExist) {
		os.RemoveAll(dir)
	}
	os.RemoveAll(trash)
}
