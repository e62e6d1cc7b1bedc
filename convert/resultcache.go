package convert

// The result cache: converting an unchanged registry image again, with the
// same options, base and executable, reuses rootfs.ext4 (and the Metadata
// that goes with it) from an earlier conversion instead of reading and
// merging the layers again.
//
// Eligibility. Only registry sources with the blob cache on (not
// --no-cache, which disables both caches). OCI layouts and archives are
// local files that are the input themselves: they are always re-read and
// re-verified, so a tampered layout blob still fails (a manifest-keyed
// cache would hide that). A conversion whose ext4 Options carry a Source
// opener (Go API only) is not cached either: the opener is not part of the
// key.
//
// Key. sha256 over a canonical JSON document (resultKey, a struct, so the
// field order is fixed) of everything that determines rootfs.ext4 and the
// non-per-run parts of meta.json: a sha256 of the running executable (read
// once per process: a new build never reuses an old build's result, no
// matter its version string), the manifest digest and platform of the
// resolved image (not the reference: a tag and a digest reference to the
// same manifest share an entry; a moved tag resolves to another digest and
// misses), mode, --plain, every ext4 option, the rootfs limits as given (a
// lower limit is another key, so the conversion runs and still refuses),
// the rootfs mode, and the Gondolin base identity (checksums of kernel,
// initramfs and rootfs, computed from the files) when the glue is used.
//
// Entry. <CacheDir>/results/<key>/ holds rootfs.ext4 (sparse) and
// result.json: the key document, the Metadata minus per-run fields
// (generatedAt, source, index digest, base paths), the size of rootfs.ext4
// and its sparse digest (below). Entries are written into a temporary
// directory beside them and renamed into place, so readers never see a
// partial entry; when two conversions store the same key at once, the
// first rename wins and the other is dropped (both are identical). Entries
// are only added after the rootfs was written and synced, before the
// output is published. Entries are evicted with the rest of the cache,
// least recently used first, when a run ends above --cache-max
// (trimCache, internal/cachedir.Trim), and by `docker2vm cache prune`.
//
// Digest and copies: package internal/sparse. The output is never a
// hardlink to the entry (the guest writes to its root disk, and a user may
// too; that would poison the cache): it is a clone or a sparse copy,
// synced before it is published. On a hit the sparse digest of what was
// copied (the clone itself when cloned) is checked against result.json; a
// mismatch deletes the entry and the conversion runs normally.
//
// Same --out. Converting again into an output directory whose
// rootfs.ext4 this entry produced, untouched since, keeps that file
// instead of copying (reusePrevious): the entry records, per output
// directory, the identity (device, inode, size, mtime, ctime) of the file
// it last published there.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/docker2vm/docker2vm/ext4"
	"github.com/docker2vm/docker2vm/gondolin"
	"github.com/docker2vm/docker2vm/image"
	"github.com/docker2vm/docker2vm/internal/cachedir"
	"github.com/docker2vm/docker2vm/internal/diskio"
	"github.com/docker2vm/docker2vm/internal/sparse"
	"github.com/docker2vm/docker2vm/rootfs"
)

const resultCacheVersion = 1

// resultKey is the canonical key document. Add a field whenever something
// new influences rootfs.ext4 or the cached Metadata.
type resultKey struct {
	Version        int                    `json:"version"`
	Executable     string                 `json:"executable"`
	ManifestDigest string                 `json:"manifestDigest"`
	Platform       string                 `json:"platform"`
	Mode           Mode                   `json:"mode"`
	Plain          bool                   `json:"plain"`
	FS             resultKeyFS            `json:"fs"`
	Limits         rootfs.Limits          `json:"limits"`
	RootfsMode     gondolin.RootfsMode    `json:"rootfsMode"`
	Base           *gondolin.BaseIdentity `json:"base"`
}

type resultKeyFS struct {
	Label           string `json:"label"`
	NoJournal       bool   `json:"noJournal"`
	JournalSize     int64  `json:"journalSize"`
	Size            int64  `json:"size"`
	Headroom        int64  `json:"headroom"`
	UUID            string `json:"uuid"`
	SourceDateEpoch int64  `json:"sourceDateEpoch"`
	InodeRatio      int64  `json:"inodeRatio"`
}

// keyFS is what a cache key holds of the ext4 options: every one of them
// (a Source opener makes a run uncacheable instead).
func keyFS(fs ext4.Options) resultKeyFS {
	k := resultKeyFS{Label: fs.Label, NoJournal: fs.NoJournal, JournalSize: fs.JournalSize, Size: fs.Size,
		Headroom: fs.Headroom, SourceDateEpoch: fs.SourceDateEpoch, InodeRatio: fs.InodeRatio}
	if fs.UUID != nil {
		k.UUID = hex.EncodeToString(fs.UUID[:])
	}
	return k
}

// resultEntry is result.json.
type resultEntry struct {
	Key          string    `json:"key"`
	KeyDoc       resultKey `json:"keyDocument"`
	RootfsSize   int64     `json:"rootfsSize"`
	SparseDigest string    `json:"sparseDigest"`
	// RootfsSHA256 is rootfs.ext4's sha256 (hex) for manifest.json, when the
	// conversion wrote one (--mode assets); empty otherwise.
	RootfsSHA256 string   `json:"rootfsSha256,omitempty"`
	Metadata     Metadata `json:"metadata"`
	// What docker2vm cache du shows of the entry; not part of the key.
	cachedir.Label
}

var exeHash struct {
	once sync.Once
	sum  string
	err  error
}

// executableHash is the sha256 of the running program, computed once.
func executableHash() (string, error) {
	exeHash.once.Do(func() {
		p, err := os.Executable()
		if err != nil {
			exeHash.err = err
			return
		}
		f, err := os.Open(p)
		if err != nil {
			exeHash.err = err
			return
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			exeHash.err = err
			return
		}
		exeHash.sum = hex.EncodeToString(h.Sum(nil))
	})
	return exeHash.sum, exeHash.err
}

// resultCache is the cache of one Run; nil when the run is not eligible.
type resultCache struct {
	entries entryDirs // <CacheDir>/results
	key     string
	keyDoc  resultKey
}

// resultCacheEligible says whether opts may use the result cache at all
// (before anything is resolved).
func resultCacheEligible(opts Options) bool {
	info, _ := opts.Source.Kind.Info()
	return info.Pinned && !opts.Image.NoCache && opts.FS.Source == nil
}

// openResultCache computes the key of this conversion. base is nil for
// --plain. It returns nil (no caching) when the run is not eligible or the
// key cannot be computed; the reason goes to progress.
func openResultCache(ctx context.Context, opts Options, img *image.Image, base *gondolin.Base, progress func(string, ...any)) *resultCache {
	if !resultCacheEligible(opts) {
		return nil
	}
	root, exe, id, ok := cacheInputs(ctx, opts, base, "result cache", progress)
	if !ok {
		return nil
	}
	k := resultKey{
		Version:        resultCacheVersion,
		Executable:     exe,
		ManifestDigest: img.Digest.String(),
		Platform:       img.Platform.String(),
		Mode:           opts.Mode,
		Plain:          opts.Plain,
		FS:             keyFS(opts.FS),
		Limits:         opts.Limits,
		RootfsMode:     opts.RootfsMode,
		Base:           id,
	}
	b, err := json.Marshal(k)
	if err != nil {
		return nil
	}
	sum := sha256.Sum256(b)
	return &resultCache{entries: entryDirs{dir: cachedir.ResultsDir(root), record: cachedir.ResultFile, what: "result cache", progress: progress},
		key: hex.EncodeToString(sum[:]), keyDoc: k}
}

func (c *resultCache) entryDir() string { return c.entries.path(c.key) }

// shortKey is the key as progress lines show it.
func (c *resultCache) shortKey() string { return c.key[:16] }

// lookup copies the cached rootfs.ext4 of this key to dst (which must not
// exist) and returns the entry (its Metadata and checksums), or ok=false on
// a miss. A corrupt
// or unreadable entry is deleted and reported as a miss; dst is then
// removed again. Only a cancelled ctx is an error.
//
// prev is the rootfs.ext4 of the output this run replaces ("" for none).
// When it is this entry's result, untouched since it was published, it is
// linked to dst instead of copying the entry (see reusePrevious), and
// reused is true.
func (c *resultCache) lookup(ctx context.Context, dst, prev string) (entry *resultEntry, ok, reused bool, err error) {
	dir := c.entryDir()
	if !c.entries.isDir(c.key) {
		if _, err := os.Lstat(dir); err == nil {
			c.entries.drop(c.key, "is not a directory") // a symlink or a file
		}
		return nil, false, false, nil
	}
	// In use until the copy is made: pruning (internal/cachedir) leaves it.
	var e resultEntry
	rf, err := c.entries.readRecord(dir, &e)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, false, nil
	}
	if err != nil || e.Key != c.key || e.SparseDigest == "" || e.Metadata.SourceDigest != c.keyDoc.ManifestDigest {
		if rf != nil {
			rf.Close()
		}
		c.entries.drop(c.key, "failed its check")
		return nil, false, false, nil
	}
	defer rf.Close()
	if prev != "" && c.reusePrevious(prev, dst) {
		c.entries.touch(c.key)
		return &e, true, true, nil
	}
	src, err := diskio.OpenRegular(filepath.Join(dir, RootfsFile), os.O_RDONLY)
	if err != nil {
		c.entries.drop(c.key, "failed its check")
		return nil, false, false, nil
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil || fi.Size() != e.RootfsSize {
		c.entries.drop(c.key, "failed its check")
		return nil, false, false, nil
	}
	// Synced like a converted rootfs.ext4 before it is published.
	digest, cerr := sparse.Copy(ctx, dst, src, fi.Size(), true)
	if cerr != nil || digest != e.SparseDigest {
		os.Remove(dst)
		if ctx.Err() != nil {
			return nil, false, false, ctx.Err()
		}
		if cerr != nil && isOutputErr(cerr) {
			// Out of space or the like, writing the output: not the
			// entry's fault.
			return nil, false, false, cerr
		}
		c.entries.drop(c.key, "failed its check")
		return nil, false, false, nil
	}
	c.entries.touch(c.key)
	return &e, true, false, nil
}

// reusePrevious links prev, the rootfs.ext4 of the output being replaced,
// to dst when it is the file this entry's last conversion into that output
// published, untouched since: same device, inode, size, mtime and ctime as
// recorded then (see recordOutput), and no other name. Converting again
// into the same --out then reads and writes no data. Any write to the
// file, a chmod or a new link changes its ctime, which no user can set
// back, as build tools trust mtimes. (A write in the same clock tick as
// the publication, a few milliseconds, would keep the ctime on kernels
// before 6.13's fine-grained timestamps; nothing writes to an output
// before the conversion has even exited.) This is not sharing: publishing deletes the old output directory,
// so the file has one name again (and if the run fails, the staging
// directory and its name go). On false, dst does not exist.
func (c *resultCache) reusePrevious(prev, dst string) bool {
	b, err := diskio.ReadRegular(c.outputRecord(filepath.Dir(prev)), 1<<20)
	if err != nil {
		return false
	}
	var want outputIdentity
	if json.Unmarshal(b, &want) != nil {
		return false
	}
	if got, ok := identify(prev); !ok || got != want {
		return false
	}
	if err := os.Link(prev, dst); err != nil {
		return false
	}
	// Re-check through the new name: the same file, now with two names
	// (nothing replaced prev in between).
	fi, err := os.Lstat(dst)
	if err != nil {
		os.Remove(dst)
		return false
	}
	if id, ok := diskio.Identify(fi); !ok || id.Dev != want.Dev || id.Ino != want.Ino || id.Nlink != 2 {
		os.Remove(dst)
		return false
	}
	return true
}

// outputIdentity is what recordOutput keeps of a published rootfs.ext4
// (Nlink is not kept: it is 1 when recorded).
type outputIdentity struct {
	Path string `json:"path"`
	diskio.FileID
}

// identify returns p's identity; ok is false unless p is a regular file
// with exactly one name, on a system that tells a file's identity.
func identify(p string) (id outputIdentity, ok bool) {
	fi, err := os.Lstat(p)
	if err != nil || !fi.Mode().IsRegular() {
		return id, false
	}
	fid, ok := diskio.Identify(fi)
	if !ok || fid.Nlink != 1 {
		return id, false
	}
	fid.Nlink = 0
	return outputIdentity{Path: p, FileID: fid}, true
}

// outputRecord is where the identity of this entry's rootfs.ext4 in the
// output directory outDir is kept.
func (c *resultCache) outputRecord(outDir string) string {
	sum := sha256.Sum256([]byte(outDir))
	return filepath.Join(c.entryDir(), "outputs", hex.EncodeToString(sum[:16])+".json")
}

// recordOutput notes the identity of rootfs, just published in outDir, so
// that the next conversion into outDir can keep it (reusePrevious). Best
// effort: without a record the next hit copies.
func (c *resultCache) recordOutput(outDir, rootfs string) {
	id, ok := identify(rootfs)
	rec := c.outputRecord(outDir)
	if !c.entries.isDir(c.key) {
		return // no entry (a failed store): nothing to record against
	}
	if !ok {
		os.Remove(rec)
		return
	}
	if err := os.Mkdir(filepath.Dir(rec), 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return
	}
	if fi, err := os.Lstat(filepath.Dir(rec)); err != nil || !fi.IsDir() {
		return
	}
	tmp := rec + ".tmp-" + strconv.Itoa(os.Getpid())
	if err := writeJSON(tmp, id); err != nil {
		os.Remove(tmp)
		return
	}
	if err := os.Rename(tmp, rec); err != nil {
		os.Remove(tmp)
	}
}

// store adds rootfsPath and meta (per-run fields are cleared here) as the
// entry of this key. Best effort: a failure loses the entry, nothing else.
func (c *resultCache) store(ctx context.Context, rootfsPath string, meta Metadata, rootfsSHA256 string) error {
	if c.entries.clearDebris(c.key) {
		return nil // another conversion stored it meanwhile
	}
	tmp, done, err := c.entries.begin()
	if err != nil {
		return err
	}
	defer done()
	src, err := os.Open(rootfsPath)
	if err != nil {
		return err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	// Not synced: a torn entry after a crash fails its digest check and
	// is dropped, so durability buys nothing here but cold-path time.
	digest, err := sparse.Copy(ctx, filepath.Join(tmp, RootfsFile), src, fi.Size(), false)
	if err != nil {
		return err
	}
	label := cachedir.Label{Image: meta.Source.Ref, Platform: c.keyDoc.Platform}
	for _, l := range meta.Layers {
		label.Layers = append(label.Layers, l.Digest)
	}
	meta.GeneratedAt = ""
	meta.Source = SourceInfo{}
	meta.IndexDigest = ""
	meta.RuntimeInjection.BaseRootfsPath = ""
	meta.RuntimeInjection.BaseOrigin = ""
	e := resultEntry{Key: c.key, KeyDoc: c.keyDoc, RootfsSize: fi.Size(), SparseDigest: digest, RootfsSHA256: rootfsSHA256, Metadata: meta, Label: label}
	if err := writeJSON(filepath.Join(tmp, cachedir.ResultFile), e); err != nil {
		return err
	}
	return c.entries.publish(tmp, c.key)
}

// isOutputErr reports errors that are about the output's filesystem, not
// the cache entry.
func isOutputErr(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EROFS)
}

// cachedMetadata rebuilds meta.json for a hit: the cached Metadata with
// this run's per-run fields.
func cachedMetadata(cached Metadata, opts Options, info ImageInfo, base *gondolin.Base, id *gondolin.BaseIdentity) Metadata {
	m := cached
	m.GeneratedAt = now(opts).UTC().Format(time.RFC3339)
	m.Source = opts.sourceInfo()
	m.SourceDigest = info.Digest
	m.IndexDigest = info.IndexDigest
	m.Platform = info.Platform
	m.Mode = opts.Mode
	m.Runtime = info.Config
	m.Layers = info.Layers
	if base != nil && m.RuntimeInjection.Applied {
		m.RuntimeInjection.BaseRootfsPath = base.RootfsPath
		m.RuntimeInjection.BaseOrigin = base.Origin
		m.RuntimeInjection.Base = id
	}
	return m
}
