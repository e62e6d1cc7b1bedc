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
// output is published. Nothing evicts entries: delete <CacheDir>/results
// (or the whole cache directory) to reclaim the space.
//
// Sparse digest. For every non-zero 4 KiB block of the file, its offset
// and its CRC-32C, fed to sha256 per 64 MiB region (regions are hashed in
// parallel), the region digests combined with the file size. Holes and
// all-zero blocks are skipped, so the digest depends on the content only,
// not on how a filesystem happens to lay the file out, and checking it
// costs a read of the data, not of the (mostly sparse) apparent size.
// CRC-32C runs at memory speed (~24 GB/s here, against ~1.7 GB/s for
// sha256 of the data, which cost 0.35 s of CPU per copy of the 585 MB
// small image): it detects every change of up to 32 adjacent bits in a
// block and any other change of a block with probability 1-2^-32, which is
// what the digest is for: accidental modification (a user or tool writing
// to the entry, a torn write, disk errors). It is not a defense against
// someone who can write the cache directory: they could rewrite
// result.json as easily, whatever the hash.
//
// Copies. The output is never a hardlink to the entry (the guest writes to
// its root disk, and a user may too; that would poison the cache). A copy
// is a FICLONE reflink where the filesystem has it (btrfs, XFS), else a
// sparse copy: the data segments found with SEEK_DATA/SEEK_HOLE are read
// and hashed by parallel workers and written by one goroutine (buffered
// writes to one file serialise on its inode lock anyway), with all-zero
// blocks left as holes, and with O_DIRECT when the copy is the output (it
// is synced before it is published: writing it through the page cache
// only adds pages that the fsync then has to write back). On a hit the
// digest of what was copied (the clone itself when reflinked) is checked
// against result.json; a mismatch deletes the entry and the conversion
// runs normally.
//
// Same --out. Converting again into an output directory whose
// rootfs.ext4 this entry produced, untouched since, keeps that file
// instead of copying (reusePrevious): the entry records, per output
// directory, the identity (device, inode, size, mtime, ctime) of the file
// it last published there.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/docker2vm/docker2vm/gondolin"
	"github.com/docker2vm/docker2vm/image"
	"github.com/docker2vm/docker2vm/rootfs"
)

const (
	resultCacheVersion = 1
	resultsDirName     = "results"
	resultFile         = "result.json"
	sparseBlock        = 4096
	sparseRegion       = 64 << 20
	sparseBuf          = 1 << 20
)

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
	dir      string // <CacheDir>/results
	key      string
	keyDoc   resultKey
	progress func(string, ...any)
}

// resultCacheEligible says whether opts may use the result cache at all
// (before anything is resolved).
func resultCacheEligible(opts Options) bool {
	return opts.Source.Kind == image.KindRegistry && !opts.Image.NoCache && opts.FS.Source == nil
}

// openResultCache computes the key of this conversion. base is nil for
// --plain. It returns nil (no caching) when the run is not eligible or the
// key cannot be computed; the reason goes to progress.
func openResultCache(ctx context.Context, opts Options, img *image.Image, base *gondolin.Base, progress func(string, ...any)) *resultCache {
	if !resultCacheEligible(opts) {
		return nil
	}
	root := opts.Image.CacheDir
	if root == "" {
		var err error
		if root, err = image.DefaultCacheDir(); err != nil {
			return nil
		}
	}
	exe, err := executableHash()
	if err != nil {
		progress("result cache off: cannot hash the running executable: %v", err)
		return nil
	}
	fs := opts.FS
	k := resultKey{
		Version:        resultCacheVersion,
		Executable:     exe,
		ManifestDigest: img.Digest.String(),
		Platform:       img.Platform.String(),
		Mode:           opts.Mode,
		Plain:          opts.Plain,
		FS: resultKeyFS{Label: fs.Label, NoJournal: fs.NoJournal, JournalSize: fs.JournalSize, Size: fs.Size,
			Headroom: fs.Headroom, SourceDateEpoch: fs.SourceDateEpoch, InodeRatio: fs.InodeRatio},
		Limits:     opts.Limits,
		RootfsMode: opts.RootfsMode,
	}
	if fs.UUID != nil {
		k.FS.UUID = hex.EncodeToString(fs.UUID[:])
	}
	if base != nil {
		id, err := base.Identity(ctx)
		if err != nil {
			progress("result cache off: %v", err)
			return nil
		}
		k.Base = &id
	}
	b, err := json.Marshal(k)
	if err != nil {
		return nil
	}
	sum := sha256.Sum256(b)
	return &resultCache{dir: filepath.Join(root, resultsDirName), key: hex.EncodeToString(sum[:]), keyDoc: k, progress: progress}
}

func (c *resultCache) entryDir() string { return filepath.Join(c.dir, c.key) }

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
	b, err := os.ReadFile(filepath.Join(dir, resultFile))
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			c.drop(dir)
		}
		return nil, false, false, nil
	}
	var e resultEntry
	if err := json.Unmarshal(b, &e); err != nil || e.Key != c.key || e.SparseDigest == "" ||
		e.Metadata.SourceDigest != c.keyDoc.ManifestDigest {
		c.drop(dir)
		return nil, false, false, nil
	}
	if prev != "" && c.reusePrevious(prev, dst) {
		return &e, true, true, nil
	}
	src, err := os.Open(filepath.Join(dir, RootfsFile))
	if err != nil {
		c.drop(dir)
		return nil, false, false, nil
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil || fi.Size() != e.RootfsSize {
		c.drop(dir)
		return nil, false, false, nil
	}
	out, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, false, false, fmt.Errorf("creating %s: %w", dst, err)
	}
	// Synced like a converted rootfs.ext4 before it is published.
	digest, cerr := copyVerified(ctx, out, src, fi.Size(), true)
	if cerr == nil {
		cerr = out.Sync()
	}
	if err := out.Close(); err != nil && cerr == nil {
		cerr = err
	}
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
		c.drop(dir)
		return nil, false, false, nil
	}
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
	b, err := os.ReadFile(c.outputRecord(filepath.Dir(prev)))
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
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || uint64(st.Dev) != want.Dev || st.Ino != want.Ino || st.Nlink != 2 {
		os.Remove(dst)
		return false
	}
	return true
}

// outputIdentity is what recordOutput keeps of a published rootfs.ext4.
type outputIdentity struct {
	Path    string `json:"path"`
	Dev     uint64 `json:"dev"`
	Ino     uint64 `json:"ino"`
	Size    int64  `json:"size"`
	MtimeNs int64  `json:"mtimeNs"`
	CtimeNs int64  `json:"ctimeNs"`
}

// identify returns p's identity; ok is false unless p is a regular file
// with exactly one name.
func identify(p string) (id outputIdentity, ok bool) {
	fi, err := os.Lstat(p)
	if err != nil || !fi.Mode().IsRegular() {
		return id, false
	}
	st, isStat := fi.Sys().(*syscall.Stat_t)
	if !isStat || st.Nlink != 1 {
		return id, false
	}
	return outputIdentity{Path: p, Dev: uint64(st.Dev), Ino: st.Ino, Size: st.Size,
		MtimeNs: st.Mtim.Nano(), CtimeNs: st.Ctim.Nano()}, true
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
	if !ok {
		os.Remove(rec)
		return
	}
	if err := os.MkdirAll(filepath.Dir(rec), 0o755); err != nil {
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
	if _, err := os.Stat(filepath.Join(c.entryDir(), resultFile)); err == nil {
		return nil // another conversion stored it meanwhile
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(c.dir, ".tmp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	src, err := os.Open(rootfsPath)
	if err != nil {
		return err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	dst, err := os.OpenFile(filepath.Join(tmp, RootfsFile), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	// Not synced: a torn entry after a crash fails its digest check and
	// is dropped, so durability buys nothing here but cold-path time.
	digest, err := copyVerified(ctx, dst, src, fi.Size(), false)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	meta.GeneratedAt = ""
	meta.Source = SourceInfo{}
	meta.IndexDigest = ""
	meta.RuntimeInjection.BaseRootfsPath = ""
	meta.RuntimeInjection.BaseOrigin = ""
	e := resultEntry{Key: c.key, KeyDoc: c.keyDoc, RootfsSize: fi.Size(), SparseDigest: digest, RootfsSHA256: rootfsSHA256, Metadata: meta}
	if err := writeJSON(filepath.Join(tmp, resultFile), e); err != nil {
		return err
	}
	if err := os.Rename(tmp, c.entryDir()); err != nil {
		if _, serr := os.Stat(filepath.Join(c.entryDir(), resultFile)); serr == nil {
			return nil // lost the race to an identical entry
		}
		return err
	}
	return nil
}

// drop deletes an entry: renamed away first, so that no reader sees it
// half deleted.
func (c *resultCache) drop(dir string) {
	if c.progress != nil {
		c.progress("result cache: the entry %s failed its check and was removed; converting", c.shortKey())
	}
	trash, err := os.MkdirTemp(c.dir, ".trash-")
	if err != nil {
		os.RemoveAll(dir)
		return
	}
	if err := os.Rename(dir, filepath.Join(trash, "entry")); err != nil && !errors.Is(err, os.ErrNotExist) {
		os.RemoveAll(dir)
	}
	os.RemoveAll(trash)
}

// isOutputErr reports errors that are about the output's filesystem, not
// the cache entry.
func isOutputErr(err error) bool {
	return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) || errors.Is(err, unix.EROFS)
}

// copyVerified copies src (size bytes) to dst, an empty file, and returns
// the sparse digest of what dst now holds: a reflink when the filesystem
// can (then dst is read back to hash it), else a sparse copy that hashes
// what it writes. A durable copy (one the caller will fsync) is written
// with O_DIRECT where the filesystem takes it: the data goes from the
// copy's buffers to the disk, instead of into new page-cache pages that
// the fsync then has to write back (on the benchmark machine that halves
// the system time and makes it steady).
func copyVerified(ctx context.Context, dst, src *os.File, size int64, durable bool) (string, error) {
	if err := unix.IoctlFileClone(int(dst.Fd()), int(src.Fd())); err == nil {
		return sparseDigest(ctx, dst, nil, size, false)
	}
	if err := dst.Truncate(size); err != nil {
		return "", err
	}
	return sparseDigest(ctx, src, dst, size, durable)
}

// sparseDigest hashes f (see the package comment at the top of this file)
// and, when dst is not nil, writes every non-zero block to dst at the same
// offset (dst must be size bytes long and all holes). Regions are read and
// hashed by up to GOMAXPROCS workers; the writes to dst go through one
// goroutine (see blockWriter).
func sparseDigest(ctx context.Context, f, dst *os.File, size int64, durable bool) (string, error) {
	nreg := int((size + sparseRegion - 1) / sparseRegion)
	sums := make([][]byte, nreg)
	workers := min(runtime.GOMAXPROCS(0), 4, max(nreg, 1))
	var bw *blockWriter
	if dst != nil {
		bw = newBlockWriter(dst, 2*workers+2, durable)
		defer bw.closeDirect()
	}
	var next atomic.Int64
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var own []byte
			if bw == nil {
				own = make([]byte, sparseBuf)
			}
			for {
				r := int(next.Add(1) - 1)
				if r >= nreg {
					return
				}
				if err := ctx.Err(); err != nil {
					errs[w] = err
					return
				}
				start := int64(r) * sparseRegion
				sum, err := hashRegion(f, bw, start, min(start+sparseRegion, size), own)
				if err != nil {
					errs[w] = err
					next.Store(int64(nreg)) // stop the others
					return
				}
				sums[r] = sum
			}
		}()
	}
	wg.Wait()
	if bw != nil {
		if err := bw.close(); err != nil {
			return "", err // the readers' errors are its consequence
		}
	}
	if err := errors.Join(errs...); err != nil {
		return "", err
	}
	h := sha256.New()
	var n [8]byte
	io.WriteString(h, "docker2vm sparse digest v1\n")
	binary.LittleEndian.PutUint64(n[:], uint64(size))
	h.Write(n[:])
	for r, s := range sums {
		if s == nil {
			continue
		}
		binary.LittleEndian.PutUint64(n[:], uint64(r))
		h.Write(n[:])
		h.Write(s)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

var (
	zeroBlock  [sparseBlock]byte
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
)

// blockWriter writes runs of blocks to one file from one goroutine.
// Buffered writes to a file are serialised by its inode lock on ext4 (and
// most Linux filesystems), so several writers only queue on it, while the
// reading and hashing of the next buffers can go on beside the writes.
// Buffers come from a fixed pool, so memory stays bounded.
type blockWriter struct {
	dst *os.File
	// direct is dst opened again with O_DIRECT (nil when not durable or
	// not supported); aligned runs go through it.
	direct *os.File
	flush  bool // start writeback as buffered writes go (when not direct)
	free   chan []byte
	jobs   chan writeJob
	done   chan struct{}
	err    error // the first write error; read after done
	// failed is set with err, so that readers stop early.
	failed atomic.Bool
}

// writeJob is a buffer and the runs of it to write: buf[lo:hi] at off+lo.
type writeJob struct {
	buf  []byte
	off  int64
	runs [][2]int
}

func newBlockWriter(dst *os.File, nbuf int, durable bool) *blockWriter {
	bw := &blockWriter{dst: dst, flush: durable, free: make(chan []byte, nbuf), jobs: make(chan writeJob, nbuf), done: make(chan struct{})}
	if durable {
		// Through /proc: the same open file, whatever its path now.
		if f, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", dst.Fd()), os.O_WRONLY|unix.O_DIRECT, 0); err == nil {
			bw.direct, bw.flush = f, false
		}
	}
	for range nbuf {
		bw.free <- alignedBuffer(sparseBuf)
	}
	go bw.run()
	return bw
}

// alignedBuffer returns n bytes starting at a sparseBlock boundary in
// memory, as O_DIRECT needs.
func alignedBuffer(n int) []byte {
	b := make([]byte, n+sparseBlock)
	skip := int(-uintptr(unsafe.Pointer(unsafe.SliceData(b))) & (sparseBlock - 1))
	return b[skip : skip+n : skip+n]
}

// closeDirect closes the O_DIRECT descriptor, once the writes are done.
func (bw *blockWriter) closeDirect() {
	if bw.direct != nil {
		bw.direct.Close()
	}
}

// write writes p at off: through the O_DIRECT descriptor when there is one
// and p is block-aligned (in memory, offset and length), else buffered.
// A filesystem that refuses a direct write gets this and every later one
// buffered.
func (bw *blockWriter) write(p []byte, off int64) error {
	if bw.direct != nil && off%sparseBlock == 0 && len(p)%sparseBlock == 0 &&
		uintptr(unsafe.Pointer(unsafe.SliceData(p)))%sparseBlock == 0 {
		_, err := bw.direct.WriteAt(p, off)
		if !errors.Is(err, unix.EINVAL) {
			return err
		}
		bw.direct.Close()
		bw.direct = nil
	}
	_, err := bw.dst.WriteAt(p, off)
	return err
}

func (bw *blockWriter) run() {
	defer close(bw.done)
	var wbLo, wbHi int64 // written since writeback was last started
	for j := range bw.jobs {
		for _, r := range j.runs {
			if bw.err != nil {
				break
			}
			off := j.off + int64(r[0])
			if err := bw.write(j.buf[r[0]:r[1]], off); err != nil {
				bw.err = err
				bw.failed.Store(true)
				break
			}
			if wbHi == 0 {
				wbLo = off
			}
			wbLo, wbHi = min(wbLo, off), max(wbHi, off+int64(r[1]-r[0]))
		}
		bw.free <- j.buf[:cap(j.buf)]
		if bw.flush && wbHi-wbLo >= sparseRegion {
			// Best effort: only starts the writeback, so that the
			// caller's fsync has less to wait for.
			unix.SyncFileRange(int(bw.dst.Fd()), wbLo, wbHi-wbLo, unix.SYNC_FILE_RANGE_WRITE)
			wbLo, wbHi = 0, 0
		}
	}
}

// buffer returns a free buffer.
func (bw *blockWriter) buffer() []byte { return <-bw.free }

// close waits for every queued write and returns the first error.
func (bw *blockWriter) close() error {
	close(bw.jobs)
	<-bw.done
	return bw.err
}

// hashRegion hashes the non-zero blocks of f in [start, end) (a sha256 of
// each block's offset and CRC-32C) and, when bw is not nil, has them
// written to its file; buf is the read buffer when bw is nil. It returns
// nil when the region holds only zeros.
func hashRegion(f *os.File, bw *blockWriter, start, end int64, buf []byte) ([]byte, error) {
	fd := int(f.Fd())
	h := sha256.New()
	nonzero := false
	var n [12]byte
	off := start // everything before off is done
	for off < end {
		if bw != nil && bw.failed.Load() {
			return nil, errors.New("stopped: writing the copy failed")
		}
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) || (err == nil && data >= end) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("SEEK_DATA %s: %w", f.Name(), err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("SEEK_HOLE %s: %w", f.Name(), err)
		}
		// Blocks are aligned to the file, not to the extents a
		// filesystem reports (whose granularity may be finer).
		data = max(data-data%sparseBlock, off)
		hole = min((hole+sparseBlock-1)/sparseBlock*sparseBlock, end)
		for data < hole {
			if bw != nil {
				buf = bw.buffer()
			}
			m := int(min(int64(len(buf)), hole-data))
			got, err := f.ReadAt(buf[:m], data)
			if err != nil && !(errors.Is(err, io.EOF) && got > 0) {
				if bw != nil {
					bw.free <- buf
				}
				return nil, fmt.Errorf("reading %s: %w", f.Name(), err)
			}
			b := buf[:got]
			// Hash the non-zero blocks; note runs of them to write.
			var runs [][2]int
			runStart := -1
			for i := 0; i < len(b); i += sparseBlock {
				blk := b[i:min(i+sparseBlock, len(b))]
				if bytes.Equal(blk, zeroBlock[:len(blk)]) {
					if runStart >= 0 {
						runs = append(runs, [2]int{runStart, i})
					}
					runStart = -1
					continue
				}
				binary.LittleEndian.PutUint64(n[:8], uint64(data+int64(i)))
				binary.LittleEndian.PutUint32(n[8:], crc32.Checksum(blk, castagnoli))
				h.Write(n[:])
				nonzero = true
				if runStart < 0 {
					runStart = i
				}
			}
			if runStart >= 0 {
				runs = append(runs, [2]int{runStart, len(b)})
			}
			if bw != nil {
				bw.jobs <- writeJob{buf: buf, off: data, runs: runs}
			}
			data += int64(got)
		}
		off = hole
	}
	if !nonzero {
		return nil, nil
	}
	return h.Sum(nil), nil
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
