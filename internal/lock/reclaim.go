package lock

import (
	"errors"
	"os"
	"path/filepath"
	"strings"

	"github.com/docker2vm/docker2vm/internal/diskio"
)

// A temporary entry (a file or directory written under a temporary name,
// then renamed into place) is claimed by a lock while its writer lives:
// NAME.lock, taken before NAME is created (Claim). What a killed writer
// left has no live holder of that lock, and the next process to look
// reclaims it (Reclaim).

// Claim takes the lock of the temporary entry at path (path + ".lock")
// before it is created. Release it with Remove once the entry is renamed
// away or removed.
func Claim(path string) (*File, error) { return Try(path + ".lock") }

// Reclaim removes the entries of dir whose names start with prefix and
// that no live process claims (their .lock is free or missing), with their
// lock files, and lock files left without an entry. It returns how many
// entries it removed. Errors are ignored: what cannot be removed now, the
// next look removes.
func Reclaim(dir, prefix string) int {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		p := filepath.Join(dir, name)
		if strings.HasSuffix(name, ".lock") {
			if _, err := os.Lstat(strings.TrimSuffix(p, ".lock")); errors.Is(err, os.ErrNotExist) {
				if l, err := Try(p); err == nil {
					l.Remove()
				}
			}
			continue
		}
		l, err := Try(p + ".lock")
		if err != nil {
			continue // its writer lives
		}
		if os.RemoveAll(p) == nil {
			n++
		}
		l.Remove()
	}
	return n
}

// ReclaimHeld removes the regular files of dir whose names match and whose
// own lock (TryFile) no live process holds: files a writer locks right
// after creating them, as the blob cache's downloads and the decompressed
// archives are, left by killed runs. It returns how many it removed and
// their bytes. Other kinds of entries are left alone.
func ReclaimHeld(dir string, match func(name string) bool) (n int, bytes int64) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0
	}
	for _, e := range ents {
		if !match(e.Name()) || !e.Type().IsRegular() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		// What was a regular file when listed may be a link or a FIFO now.
		f, err := diskio.OpenRegular(p, os.O_RDWR)
		if err != nil {
			continue
		}
		if fi, err := f.Stat(); err == nil {
			if ok, err := TryFile(f); err == nil && ok {
				if os.Remove(p) == nil {
					n++
					bytes += fi.Size()
				}
			}
		}
		f.Close()
	}
	return n, bytes
}
