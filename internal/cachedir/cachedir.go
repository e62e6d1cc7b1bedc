// Package cachedir owns docker2vm's cache directory: where each cache
// keeps its entries, and how the whole is measured, listed and pruned.
//
//	<root>/blobs/sha256/<hex>        verified blobs (package image)
//	<root>/results/<key>/            converted rootfs.ext4 + result.json (package convert)
//	<root>/prefixes/<key>/           the merged state after a prefix of layers + prefix.json (package convert)
//	<root>/tmp/                      decompressed archives while a run reads them
//
// An entry's last use is its modification time (blobs) or that of its
// record (result.json, prefix.json): the caches set it when they serve an
// entry.
// A run holds a shared lock (internal/lock.TryShared) on the files of
// the entries it reads, for as long as it reads them; pruning takes an
// exclusive lock first and skips an entry it cannot lock, so it never
// removes an entry a running conversion uses, whichever process prunes.
// Temporary files and directories are left to the caches' own reclaim,
// which knows their owners.
package cachedir

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/docker2vm/docker2vm/internal/diskio"
	"github.com/docker2vm/docker2vm/internal/lock"
)

// DefaultMax is the size the caches are trimmed to after each run when
// nothing else is configured.
const DefaultMax = 10 << 30

// MaxEnv overrides DefaultMax (a size such as 20G, or "none").
const MaxEnv = "DOCKER2VM_CACHE_MAX"

// BlobsDir is where the blob cache keeps blobs of digest algorithm sha256.
func BlobsDir(root string) string { return filepath.Join(root, "blobs", "sha256") }

// ResultsDir is where the result cache keeps its entries.
func ResultsDir(root string) string { return filepath.Join(root, "results") }

// PrefixesDir is where the prefix cache keeps its entries.
func PrefixesDir(root string) string { return filepath.Join(root, "prefixes") }

// TmpDir is where runs decompress archives.
func TmpDir(root string) string { return filepath.Join(root, "tmp") }

// ResultFile is the file of a result entry that records it (and whose
// time is the entry's last use).
const ResultFile = "result.json"

// PrefixFile is a prefix entry's record.
const PrefixFile = "prefix.json"

// dirKinds are the kinds of entry that are directories: where they are
// and the file that records each.
var dirKinds = []struct {
	kind, record string
	dir          func(string) string
}{
	{"result", ResultFile, ResultsDir},
	{"prefix", PrefixFile, PrefixesDir},
}

// record is the file whose lock and time are those of e.
func record(e Entry) string {
	for _, k := range dirKinds {
		if k.kind == e.Kind {
			return filepath.Join(e.Path, k.record)
		}
	}
	return e.Path
}

// Entry is one cache entry.
type Entry struct {
	Kind    string    `json:"kind"` // "blob", "result" or "prefix"
	ID      string    `json:"id"`   // a blob's sha256:<hex>, else the entry's key
	Path    string    `json:"path"`
	Bytes   int64     `json:"bytes"` // on disk
	LastUse time.Time `json:"lastUse"`
	// Of says, for people, what the entry belongs to: the image a result
	// was converted from (and its platform); the images whose results
	// name a blob as a layer. Empty when nothing tells.
	Of string `json:"of,omitempty"`
}

// Label is what a result or prefix entry's record says of it for Of,
// written by its cache and read back by List.
type Label struct {
	Image    string   `json:"image,omitempty"` // the reference the entry was converted from (its first run's)
	Platform string   `json:"platform,omitempty"`
	Layers   []string `json:"layers,omitempty"` // the image's layer digests
	// Prefix is, for a prefix entry, the number of layers it holds.
	Prefix int `json:"prefix,omitempty"`
}

// MaxRecord bounds what is read of an entry's record file (a prefix
// entry's holds the ext4 writer's free runs).
const MaxRecord = 64 << 20

// List returns every entry under root, least recently used first. A
// missing cache is empty.
func List(root string) ([]Entry, error) {
	var out []Entry
	blobs, err := readDir(BlobsDir(root))
	if err != nil {
		return nil, err
	}
	for _, e := range blobs {
		if strings.HasPrefix(e.Name(), ".") || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		out = append(out, Entry{Kind: "blob", ID: "sha256:" + e.Name(), Path: filepath.Join(BlobsDir(root), e.Name()),
			Bytes: diskio.Allocated(fi), LastUse: fi.ModTime()})
	}
	for _, k := range dirKinds {
		ents, err := readDir(k.dir(root))
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".") || !e.IsDir() {
				continue
			}
			dir := filepath.Join(k.dir(root), e.Name())
			fi, err := os.Lstat(filepath.Join(dir, k.record))
			if err != nil {
				continue // being written, or debris its cache replaces
			}
			out = append(out, Entry{Kind: k.kind, ID: e.Name(), Path: dir, Bytes: dirBytes(dir), LastUse: fi.ModTime()})
		}
	}
	label(out)
	sort.SliceStable(out, func(i, j int) bool { return out[i].LastUse.Before(out[j].LastUse) })
	return out, nil
}

// label fills in Of from the result entries' labels (unreadable ones say
// nothing).
func label(entries []Entry) {
	layerOf := map[string][]string{}
	for i, e := range entries {
		if e.Kind == "blob" {
			continue
		}
		b, err := diskio.ReadRegular(record(e), MaxRecord)
		var l Label
		if err != nil || json.Unmarshal(b, &l) != nil || l.Image == "" {
			continue
		}
		entries[i].Of = strings.TrimSpace(l.Image + " " + l.Platform)
		if e.Kind == "prefix" {
			entries[i].Of = fmt.Sprintf("layers 1-%d of %s", l.Prefix, entries[i].Of)
		}
		for _, d := range l.Layers {
			if !slices.Contains(layerOf[d], l.Image) {
				layerOf[d] = append(layerOf[d], l.Image)
			}
		}
	}
	for i, e := range entries {
		if imgs := layerOf[e.ID]; e.Kind == "blob" && len(imgs) > 0 {
			sort.Strings(imgs)
			entries[i].Of = "layer of " + strings.Join(imgs, ", ")
		}
	}
}

func readDir(dir string) ([]os.DirEntry, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return ents, err
}

func dirBytes(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil {
			if fi, err := d.Info(); err == nil {
				n += diskio.Allocated(fi)
			}
		}
		return nil
	})
	return n
}

// Total is the bytes of entries.
func Total(entries []Entry) int64 {
	var n int64
	for _, e := range entries {
		n += e.Bytes
	}
	return n
}

// Removed says what Remove or Trim removed.
type Removed struct {
	Entries []Entry
	Bytes   int64
	Busy    int // entries in use, left
}

// Trim removes the least recently used entries until what remains takes
// at most max bytes (max < 0: every entry); entries in use are left (and
// counted as Busy). With dry, it only says what it would remove.
func Trim(root string, max int64, dry bool) (Removed, error) {
	entries, err := List(root)
	if err != nil {
		return Removed{}, err
	}
	total := Total(entries)
	var r Removed
	for _, e := range entries {
		if total <= max {
			break
		}
		ok, err := remove(e, dry)
		if err != nil {
			return r, err
		}
		if !ok {
			r.Busy++
			continue
		}
		total -= e.Bytes
		r.Entries = append(r.Entries, e)
		r.Bytes += e.Bytes
	}
	return r, nil
}

// remove deletes e unless a run uses it (false then); with dry, it only
// checks that.
func remove(e Entry, dry bool) (bool, error) {
	lockPath := record(e)
	// Opened without blocking: a FIFO planted there is no entry any run
	// can use, and is removed without its lock.
	f, err := diskio.OpenRegular(lockPath, os.O_RDONLY)
	var nr *diskio.NotRegularError
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return true, nil // gone meanwhile
	case errors.As(err, &nr):
	case err != nil:
		return false, err
	default:
		defer f.Close()
		if ok, err := lock.TryFile(f); err != nil || !ok {
			return false, err
		}
	}
	if dry {
		return true, nil
	}
	if e.Kind == "blob" {
		if err := os.Remove(e.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("removing %s: %w", e.Path, err)
		}
		return true, nil
	}
	// A directory: renamed away first, so that no run sees it half
	// removed (its cache's .trash- names, which it reclaims).
	trash, err := os.MkdirTemp(filepath.Dir(e.Path), ".trash-")
	if err != nil {
		return false, err
	}
	defer os.RemoveAll(trash)
	if err := os.Rename(e.Path, filepath.Join(trash, "entry")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("removing %s: %w", e.Path, err)
	}
	return true, nil
}

// RemoveAll removes every entry not in use.
func RemoveAll(root string) (Removed, error) { return Trim(root, -1, false) }
