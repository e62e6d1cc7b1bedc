package convert

// The prefix cache: converting an image whose first k layers are those of
// an image converted before starts from the merged state after those k
// layers (the partial rootfs.ext4, the tree and the ext4 writer's state)
// instead of from nothing: the layers after them cost what they cost, the
// k before them a copy (a clone where the filesystem has reflinks). The
// edit-rebuild-convert loop changes the last layers of an image; the
// conversion after such a change reads only those.
//
// What is kept. After its next-to-last layer, a conversion of an image of
// two layers or more stores the state: rootfs.part (the image file as the
// writer left it: the runtime glue's data and that of every file so far;
// sparse), state (the tree, fstree.Encode, with each file's extents), and
// prefix.json (the writer's checkpoints after the glue and after the
// layers, the merge's counters, rootfs.part's size and sparse digest,
// state's sha256). The output of a resumed conversion is the output of a
// cold one, byte for byte: the writer hands out blocks in the order of its
// calls only, and everything it and the merge decide on is in the state.
//
// Key. sha256 of a canonical document: the running executable's sha256,
// the diff IDs of the k layers (the uncompressed tars: the same layers
// compressed another way share the entry), every ext4 option, the rootfs
// limits and the Gondolin base's identity (the glue is read into the image
// before the layers; none with --plain). Mode and rootfs mode act after
// the layers and are not in it.
//
// Sources. Every kind, unlike the result cache: a layout or archive layer
// that is reused is not read again, but the entry was made from bytes
// verified against the same diff IDs, so the output is the one those
// digests name either way (a layer read again is verified as always).
// Not with --no-cache, nor with an ext4 Source opener (Go API only).
//
// Use. Before the first layer, the longest stored prefix (of at most all
// layers but the last) is looked up: rootfs.part is copied to the output
// (sparse.Copy, its digest checked; a clone where the filesystem has
// them), state's sha256 checked, the glue read again into the copy (the
// same blocks: it must end at the checkpoint the entry recorded), the
// writer restored and the tree decoded. Any mismatch drops the entry and
// the conversion runs cold. When the prefix found is the one the run would
// store (an image whose last layer changed), the entry is taken instead:
// its rootfs.part becomes the output by a rename, whose data is on the
// disk already, and the copy goes the other way, back into the entry,
// where it need not be synced (take). Entries are written like
// the result cache's (entryDirs): a killed run leaves a temporary
// directory that the next store reclaims, never a half entry; they are
// listed, pruned and trimmed to --cache-max with the rest of the cache
// (internal/cachedir), least recently used first.

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/docker2vm/docker2vm/ext4"
	"github.com/docker2vm/docker2vm/fstree"
	"github.com/docker2vm/docker2vm/gondolin"
	"github.com/docker2vm/docker2vm/gondolin/guest"
	"github.com/docker2vm/docker2vm/image"
	"github.com/docker2vm/docker2vm/internal/cachedir"
	"github.com/docker2vm/docker2vm/internal/diskio"
	"github.com/docker2vm/docker2vm/internal/sparse"
	"github.com/docker2vm/docker2vm/internal/units"
	"github.com/docker2vm/docker2vm/rootfs"
)

const (
	prefixCacheVersion = 1
	prefixImageFile    = "rootfs.part"
	prefixStateFile    = "state"
)

// prefixKey is the key document of the state after Layers layers.
type prefixKey struct {
	Version    int                    `json:"version"`
	Executable string                 `json:"executable"`
	DiffIDs    []string               `json:"diffIDs"`
	FS         resultKeyFS            `json:"fs"`
	Limits     rootfs.Limits          `json:"limits"`
	Base       *gondolin.BaseIdentity `json:"base"`
}

// prefixEntry is prefix.json.
type prefixEntry struct {
	Key    string    `json:"key"`
	KeyDoc prefixKey `json:"keyDocument"`
	// GlueCheckpoint is the writer's state after the glue, before the
	// layers; Checkpoint after them (ext4.Writer.Checkpoint).
	GlueCheckpoint []byte       `json:"glueCheckpoint"`
	Checkpoint     []byte       `json:"checkpoint"`
	Stats          rootfs.Stats `json:"stats"`
	ImageSize      int64        `json:"imageSize"`
	SparseDigest   string       `json:"sparseDigest"`
	StateSHA256    string       `json:"stateSha256"`
	cachedir.Label
}

// prefixCache finds and stores the states after prefixes of one image's
// layers.
type prefixCache struct {
	entries entryDirs
	doc     prefixKey // DiffIDs: all of the image's
	image   string    // for labels: the source, its platform and layer digests
	plat    string
	digests []string
	// max is the largest state kept: half the cache's limit (a larger
	// one would push most of the cache out), 0 for no limit.
	max int64
}

// openPrefixCache returns the image's prefix cache, or nil when the run
// may not use one (the reason goes to progress when it is not the
// options').
func openPrefixCache(ctx context.Context, opts Options, img *image.Image, base *gondolin.Base, progress func(string, ...any)) *prefixCache {
	if opts.Image.NoCache || opts.FS.Source != nil || len(img.Layers) < 2 {
		return nil
	}
	root, exe, id, ok := cacheInputs(ctx, opts, base, "prefix cache", progress)
	if !ok {
		return nil
	}
	doc := prefixKey{Version: prefixCacheVersion, Executable: exe, FS: keyFS(opts.FS), Limits: opts.Limits, Base: id}
	var digests []string
	for _, l := range img.Layers {
		if l.DiffID.Hex == "" {
			return nil
		}
		doc.DiffIDs = append(doc.DiffIDs, l.DiffID.String())
		digests = append(digests, l.Digest.String())
	}
	return &prefixCache{entries: entryDirs{dir: cachedir.PrefixesDir(root), record: cachedir.PrefixFile, what: "prefix cache", progress: progress},
		doc: doc, image: opts.sourceName(), plat: img.Platform.String(), digests: digests, max: prefixMax(opts.CacheMax)}
}

// prefixMax is the largest state kept under a cache limit of cacheMax
// (Options.CacheMax: 0 the default, negative none).
func prefixMax(cacheMax int64) int64 {
	switch {
	case cacheMax < 0:
		return 0
	case cacheMax == 0:
		cacheMax = cachedir.DefaultMax
	}
	return cacheMax / 2
}

// key returns the key of the state after the first k layers.
func (c *prefixCache) key(k int) (string, prefixKey) {
	doc := c.doc
	doc.DiffIDs = doc.DiffIDs[:k]
	b, _ := json.Marshal(doc)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), doc
}

// storeAt is the prefix a conversion stores: all layers but the last.
func (c *prefixCache) storeAt() int { return len(c.doc.DiffIDs) - 1 }

// lookup finds the longest stored prefix and, when one checks out, makes
// dst (which must not exist) its rootfs.part and returns the conversion
// resumed from it; nil on a miss. readGlue reads the base's glue into a
// writer (nil for --plain). Only a cancelled ctx, a failure writing dst
// and the base's glue failing to read are errors; dst does not exist after
// a miss.
func (c *prefixCache) lookup(ctx context.Context, dst string, opts Options, readGlue func(*ext4.Writer) (*guest.Glue, error)) (*rootfsRun, error) {
	for k := c.storeAt(); k >= 1; k-- {
		key, _ := c.key(k)
		if !c.entries.clearDebris(key) {
			continue
		}
		resume := c.resume
		if k == c.storeAt() {
			resume = c.take // the state this run would store: moved, not copied
		}
		r, err := resume(ctx, key, k, dst, opts, readGlue)
		if err != nil || r != nil {
			return r, err
		}
	}
	return nil, nil
}

// openRecord opens and reads the prefix.json of the entry in dir, which
// must be key's, of k layers; it holds a shared lock on it (pruning leaves
// an entry in use) until the file is closed.
func (c *prefixCache) openRecord(dir, key string, k int) (*os.File, prefixEntry, bool) {
	var e prefixEntry
	rec, err := c.entries.readRecord(dir, &e)
	if err != nil {
		return nil, e, false
	}
	if e.Key != key || e.Stats.Layers != k || e.SparseDigest == "" {
		rec.Close()
		return nil, e, false
	}
	return rec, e, true
}

// resume rebuilds the conversion after k layers from key's entry, which
// stays: its image is copied. nil (and dst removed) when the entry does
// not check out, which is dropped.
func (c *prefixCache) resume(ctx context.Context, key string, k int, dst string, opts Options, readGlue func(*ext4.Writer) (*guest.Glue, error)) (*rootfsRun, error) {
	dir := c.entries.path(key)
	miss := func(why string, err error) (*rootfsRun, error) {
		return c.miss(ctx, dst, key, why, err, c.entries.drop)
	}
	rec, e, ok := c.openRecord(dir, key, k)
	if !ok {
		if !c.entries.isDir(key) {
			return nil, nil // taken by another run meanwhile: not damaged
		}
		return miss("failed its check", nil)
	}
	defer rec.Close()
	src, err := diskio.OpenRegular(filepath.Join(dir, prefixImageFile), os.O_RDONLY)
	if err != nil {
		return miss("failed its check (image)", nil)
	}
	defer src.Close()
	if fi, err := src.Stat(); err != nil || fi.Size() != e.ImageSize {
		return miss("failed its check (image)", nil)
	}
	// Durable: written straight to the disk (overlapping the reads) rather
	// than left for the output's final fsync to flush all at once.
	digest, err := sparse.Copy(ctx, dst, src, e.ImageSize, true)
	if err != nil && (ctx.Err() != nil || isOutputErr(err)) {
		return miss("", err)
	}
	if err != nil || digest != e.SparseDigest {
		return miss("failed its check (image)", nil)
	}
	r, why, err := rebuild(ctx, dir, e, dst, opts, readGlue)
	if err != nil || r == nil {
		return miss(why, err)
	}
	c.entries.touch(key)
	return r, nil
}

// take rebuilds the conversion after k layers from key's entry when k is
// the prefix this run would store: the entry's image becomes the output
// by a rename (its data is on the disk already: the output's final fsync
// has little to do), and a copy of it, which checks its digest on the
// way, goes back into the entry, which is published again. Where the
// rename cannot be made (another filesystem), it is resume's copy. When
// the copy back fails (the cache's disk is full), the run goes on with the
// image, its digest checked, and the entry is not kept. Until
// it is published again the entry is out of the cache: a run killed
// meanwhile loses it (its lock-owned directory is reclaimed), another run
// at the same time misses it.
func (c *prefixCache) take(ctx context.Context, key string, k int, dst string, opts Options, readGlue func(*ext4.Writer) (*guest.Glue, error)) (*rootfsRun, error) {
	tmp, done, err := c.entries.begin()
	if err != nil {
		return c.resume(ctx, key, k, dst, opts, readGlue)
	}
	defer done()
	own := filepath.Join(tmp, "entry")
	if err := os.Rename(c.entries.path(key), own); err != nil {
		return nil, nil // taken by another run meanwhile
	}
	keep := true // the entry goes back into the cache (false: said why not)
	miss := func(why string, err error) (*rootfsRun, error) {
		gone := c.entries.report
		if !keep {
			gone = func(string, string) {}
		}
		return c.miss(ctx, dst, key, why, err, gone)
	}
	rec, e, ok := c.openRecord(own, key, k)
	if !ok {
		return miss("failed its check", nil)
	}
	defer rec.Close()
	img := filepath.Join(own, prefixImageFile)
	if fi, err := os.Lstat(img); err != nil || !fi.Mode().IsRegular() || fi.Size() != e.ImageSize {
		return miss("failed its check (image)", nil)
	}
	var digest string
	if err := os.Rename(img, dst); err == nil {
		out, err := os.Open(dst)
		if err != nil {
			return miss("", err)
		}
		// Not synced: a torn entry after a crash fails its checks.
		digest, err = sparse.Copy(ctx, img, out, e.ImageSize, false)
		if err != nil && ctx.Err() == nil {
			// The copy back failed (the cache's disk is full, say), not
			// the image taken: the run goes on with it, checked, and the
			// entry is not kept (its space is what the run may lack).
			os.Remove(img)
			c.entries.report(key, "could not be copied back ("+err.Error()+")")
			keep = false
			digest, err = sparse.Digest(ctx, out, e.ImageSize)
		}
		out.Close()
		if err != nil {
			return miss("", err)
		}
	} else {
		src, err := diskio.OpenRegular(img, os.O_RDONLY)
		if err != nil {
			return miss("failed its check (image)", nil)
		}
		digest, err = sparse.Copy(ctx, dst, src, e.ImageSize, true)
		src.Close()
		if err != nil && (ctx.Err() != nil || isOutputErr(err)) {
			return miss("", err)
		}
	}
	if digest != e.SparseDigest {
		return miss("failed its check (image)", nil)
	}
	r, why, err := rebuild(ctx, own, e, dst, opts, readGlue)
	if err != nil || r == nil {
		return miss(why, err)
	}
	if !keep {
		return r, nil
	}
	if err := c.entries.publish(own, key); err == nil {
		c.entries.touch(key)
	}
	return r, nil
}

// miss ends a lookup of key's entry that did not give a conversion: dst
// goes; an error (ctx's, or one that is not the entry's fault) is
// returned, else the entry's failure is dealt with by gone (dropping it, or
// saying that it, already out of the cache, is gone).
func (c *prefixCache) miss(ctx context.Context, dst, key, why string, err error, gone func(key, why string)) (*rootfsRun, error) {
	os.Remove(dst)
	if err != nil || ctx.Err() != nil {
		return nil, cmp.Or(ctx.Err(), err)
	}
	gone(key, why)
	return nil, nil
}

// rebuild makes the writer and merge of the conversion after e's layers
// over dst, the entry's image: the base's glue read again into it (it must
// end at the checkpoint e recorded), the writer restored, the tree decoded
// from the entry in dir. On a mismatch it returns nil and why; an error
// is not the entry's fault (the base's, ctx's).
func rebuild(ctx context.Context, dir string, e prefixEntry, dst string, opts Options, readGlue func(*ext4.Writer) (*guest.Glue, error)) (*rootfsRun, string, error) {
	state, err := diskio.OpenRegular(filepath.Join(dir, prefixStateFile), os.O_RDONLY)
	if err != nil {
		return nil, "failed its check (state)", nil
	}
	defer state.Close()
	r := &rootfsRun{from: e.Stats.Layers, key: e.Key, glueCP: e.GlueCheckpoint}
	if r.f, err = os.OpenFile(dst, os.O_RDWR, 0); err != nil {
		return nil, "", err // the output's, not the entry's
	}
	fail := func(why string, err error) (*rootfsRun, string, error) {
		r.f.Close()
		return nil, why, err
	}
	if r.w, err = ext4.Resume(r.f, opts.FS); err != nil {
		return fail("does not fit the options", nil)
	}
	if readGlue != nil {
		if r.glue, err = readGlue(r.w); err != nil {
			return fail("", err) // the base's fault: a cold run fails the same way
		}
	}
	if cp, err := r.w.Checkpoint(); err != nil || !bytes.Equal(cp, e.GlueCheckpoint) {
		return fail("does not fit the base's glue", nil)
	}
	if err := r.w.Restore(e.Checkpoint); err != nil {
		return fail("failed its check (writer)", nil)
	}
	// Hashed while it is decoded: the tree is used only when the whole
	// file is the one stored.
	h := sha256.New()
	tree, err := fstree.Decode(io.TeeReader(state, h), r.w.DecodeContent)
	if err != nil || hex.EncodeToString(h.Sum(nil)) != e.StateSHA256 {
		return fail("failed its check (state)", nil)
	}
	if err := ctx.Err(); err != nil {
		return fail("", err)
	}
	r.m = rootfs.Resume(r.w, opts.Limits, tree, e.Stats)
	return r, "", nil
}

// store keeps the state after the first k layers: f is the image file w
// writes, m the merge, glueCP the writer's checkpoint after the glue.
// Best effort: a failure loses the entry, nothing else (ctx's end is
// returned).
func (c *prefixCache) store(ctx context.Context, k int, f *os.File, w *ext4.Writer, m *rootfs.Merger, glueCP []byte) error {
	key, doc := c.key(k)
	if c.entries.clearDebris(key) {
		return nil // another conversion stored it meanwhile
	}
	cp, err := w.Checkpoint() // writes out what w holds back: f is whole
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if size := diskio.Allocated(fi); c.max > 0 && size > c.max {
		return fmt.Errorf("the image after %d layers takes %s, more than half the cache's limit (--cache-max)", k, units.Bytes(size))
	}
	tmp, done, err := c.entries.begin()
	if err != nil {
		return err
	}
	defer done()
	sf, err := os.Create(filepath.Join(tmp, prefixStateFile))
	if err != nil {
		return err
	}
	h := sha256.New()
	err = fstree.Encode(io.MultiWriter(sf, h), m.Tree(), w.EncodeContent)
	if cerr := sf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing the tree: %w", err)
	}
	// Not synced: a torn entry after a crash fails its checks and is
	// dropped.
	digest, err := sparse.Copy(ctx, filepath.Join(tmp, prefixImageFile), f, fi.Size(), false)
	if err != nil {
		return err
	}
	e := prefixEntry{Key: key, KeyDoc: doc, GlueCheckpoint: glueCP, Checkpoint: cp, Stats: m.Stats(),
		ImageSize: fi.Size(), SparseDigest: digest, StateSHA256: hex.EncodeToString(h.Sum(nil)),
		Label: cachedir.Label{Image: c.image, Platform: c.plat, Layers: c.digests[:k], Prefix: k}}
	if err := writeJSON(filepath.Join(tmp, cachedir.PrefixFile), e); err != nil {
		return err
	}
	return c.entries.publish(tmp, key)
}
