package ext4

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/docker2vm/docker2vm/fstree"
	"github.com/docker2vm/docker2vm/internal/diskio"
)

// Options control the image the Writer makes. The zero value is a sane
// default: journaled, labelled "gondolin-root", sized to fit plus headroom.
type Options struct {
	// Label is the volume label (at most 16 bytes); default "gondolin-root".
	Label string
	// NoJournal leaves out the JBD2 journal (on by default).
	NoJournal bool
	// JournalSize is the journal size in bytes; 0 picks one from the
	// filesystem size (4 MiB below 128 MiB, 16 MiB below 1 GiB, else 64 MiB).
	JournalSize int64
	// Size is the exact image size in bytes (a multiple of 4096); 0 means
	// automatic: the space the tree needs plus Headroom.
	Size int64
	// Headroom is the free space left for the guest when Size is 0. Default:
	// the larger of 256 MiB and a quarter of the space used. The image file is
	// sparse, so free space costs nothing on the host.
	Headroom int64
	// UUID is the filesystem UUID; nil derives it (and the htree hash seed)
	// from a hash of the tree's metadata and content, so equal trees give
	// equal images.
	UUID *[16]byte
	// SourceDateEpoch is the time used for everything not taken from the
	// tree: superblock times, the journal inode, a created lost+found.
	SourceDateEpoch int64
	// InodeRatio is bytes of filesystem per inode when sizing the inode
	// tables (mke2fs's -i); default 16384. The tree's inodes always fit.
	InodeRatio int64
	// Source reads content that Finish finds in the tree but that was not
	// stored by this Writer (e.g. from an fstree.MemStore or a base image):
	// such content is copied into the image. Without it, foreign content is
	// an error.
	Source fstree.Opener
}

const (
	defaultLabel      = "gondolin-root"
	defaultInodeRatio = 16384
	minHeadroom       = 256 << 20
	// maxAutoBytes bounds an automatically sized image: the group descriptor
	// area kept free at the start of each backup group is sized for it.
	maxAutoBytes = 1 << 40
	putChunk     = 1 << 20
	maxFileBlks  = 1 << 32 // logical block numbers are 32 bits
	maxExtentLen = 32768   // longest initialized extent
)

// Writer makes an ext4 image in a file. File data is written as it is Put;
// Finish lays out all metadata. Calls are serialised by a mutex: concurrent
// use is safe but gains nothing, and Put order decides the block layout.
type Writer struct {
	mu       sync.Mutex
	f        *os.File
	opts     Options
	alloc    allocator
	buf      []byte
	finished bool
	// metaRuns are blocks taken by metadata during Finish.
	metaRuns []run
	// pend gathers writes to consecutive blocks (small files land one after
	// the other) so that they reach the file in few large writes.
	pend    []byte
	pendOff int64
	// wbLo, wbHi is the range written since writeback was last started;
	// wbBusy is set while a goroutine starts it, wbDone waits for that.
	wbLo, wbHi int64
	wbBusy     atomic.Bool
	wbDone     sync.WaitGroup
}

const (
	pendMax = 1 << 20
	// writebackChunk is how much file data is written before its writeback
	// to disk is started (see startWriteback).
	writebackChunk = 32 << 20
)

// writeAt writes p at off through the gathering buffer.
func (w *Writer) writeAt(p []byte, off int64) error {
	if len(w.pend) > 0 && w.pendOff+int64(len(w.pend)) == off && len(w.pend)+len(p) <= pendMax {
		w.pend = append(w.pend, p...)
		return nil
	}
	if err := w.flush(); err != nil {
		return err
	}
	if len(p) >= pendMax/2 {
		return w.writeData(p, off)
	}
	if w.pend == nil {
		w.pend = make([]byte, 0, pendMax)
	}
	w.pend, w.pendOff = append(w.pend, p...), off
	return nil
}

// flush writes out gathered data.
func (w *Writer) flush() error {
	if len(w.pend) == 0 {
		return nil
	}
	err := w.writeData(w.pend, w.pendOff)
	w.pend = w.pend[:0]
	return err
}

// writeData writes file data and starts the writeback of every
// writebackChunk written. Data blocks are written once and mostly in
// ascending order, so the disk can take them while the layers are still
// being read, and the caller's final fsync waits for the tail only instead
// of the whole image.
func (w *Writer) writeData(p []byte, off int64) error {
	if _, err := w.f.WriteAt(p, off); err != nil {
		return err
	}
	end := off + int64(len(p))
	if w.wbHi == 0 {
		w.wbLo, w.wbHi = off, end
	} else {
		w.wbLo, w.wbHi = min(w.wbLo, off), max(w.wbHi, end)
	}
	if w.wbHi-w.wbLo >= writebackChunk && w.wbBusy.CompareAndSwap(false, true) {
		w.startWriteback(w.wbLo, w.wbHi)
		w.wbLo, w.wbHi = 0, 0
	}
	return nil
}

// startWriteback asks the system to start writing back [lo, hi) without
// waiting for it to finish. sync_file_range still blocks while it queues
// the pages, so it runs on its own goroutine, one at a time (ranges written
// meanwhile are queued by the next call). Best effort: where there is no
// such call, or the file does not support it, the final fsync does it all.
func (w *Writer) startWriteback(lo, hi int64) {
	w.wbDone.Add(1)
	go func() {
		defer w.wbDone.Done()
		defer w.wbBusy.Store(false)
		diskio.StartWriteback(w.f, lo, hi-lo)
	}()
}

// content is a regular file's data in the image: 48 bytes for the most
// common file, one of at most one extent (its extent is kept in place).
type content struct {
	w        *Writer
	size     int64
	one      [1]extent // the extent of a file of one
	more     *[]extent // the extents of a file of more, else nil
	crc      uint32    // crc32c of the data, folded into the derived UUID
	n        uint8     // extents in one (0 or 1) while more is nil
	released bool
	owned    bool // Finish gave it to an inode (another one sharing it gets a copy)
}

// extents are c's extents, in logical order. The slice is c's own: it
// stays valid until the next appendRun.
func (c *content) extents() []extent {
	if c.more != nil {
		return *c.more
	}
	return c.one[:c.n]
}

// extent maps file blocks [logical, logical+len) to image blocks
// [phys, phys+len).
type extent struct {
	logical uint32
	len     uint32
	phys    uint64
}

func (c *content) Size() int64 { return c.size }

func (c *content) appendRun(logical uint64, r run) {
	for r.len > 0 {
		ext := c.extents()
		if k := len(ext); k > 0 {
			last := &ext[k-1]
			if uint64(last.logical)+uint64(last.len) == logical && last.phys+uint64(last.len) == r.start && last.len < maxExtentLen {
				n := min(r.len, uint64(maxExtentLen-last.len))
				last.len += uint32(n)
				logical += n
				r.start += n
				r.len -= n
				continue
			}
		}
		n := min(r.len, maxExtentLen)
		c.add(extent{logical: uint32(logical), len: uint32(n), phys: r.start})
		logical += n
		r.start += n
		r.len -= n
	}
}

// add appends an extent.
func (c *content) add(e extent) {
	switch {
	case c.more != nil:
		*c.more = append(*c.more, e)
	case c.n == 0:
		c.one[0], c.n = e, 1
	default:
		more := []extent{c.one[0], e}
		c.more = &more
	}
}

// NewWriter starts an image in f, which it truncates: blocks never written
// stay holes, which both keeps the file sparse and gives zeroed metadata.
func NewWriter(f *os.File, opts Options) (*Writer, error) {
	w, err := newWriter(f, opts)
	if err != nil {
		return nil, err
	}
	if err := f.Truncate(0); err != nil {
		return nil, fmt.Errorf("ext4: truncating image file: %w", err)
	}
	return w, nil
}

// newWriter checks opts and returns a Writer whose next block is the first.
func newWriter(f *os.File, opts Options) (*Writer, error) {
	if opts.Label == "" {
		opts.Label = defaultLabel
	}
	if len(opts.Label) > 16 {
		return nil, fmt.Errorf("ext4: label %q is longer than 16 bytes", opts.Label)
	}
	if opts.Size < 0 || opts.Size%blockSize != 0 {
		return nil, fmt.Errorf("ext4: size %d is not a multiple of %d bytes", opts.Size, blockSize)
	}
	if opts.Headroom < 0 || opts.JournalSize < 0 || opts.InodeRatio < 0 {
		return nil, errors.New("ext4: negative headroom, journal size or inode ratio")
	}
	if opts.InodeRatio == 0 {
		opts.InodeRatio = defaultInodeRatio
	}
	maxBytes := uint64(maxAutoBytes)
	w := &Writer{f: f, opts: opts, buf: make([]byte, putChunk)}
	if opts.Size > 0 {
		maxBytes = uint64(opts.Size)
		w.alloc.limit = maxBytes / blockSize
	}
	groups := (maxBytes/blockSize + blocksPerGrp - 1) / blocksPerGrp
	w.alloc.resv = 1 + gdtBlocks(groups)
	return w, nil
}

var zeroBlock [blockSize]byte

// Put implements fstree.Store: it copies exactly size bytes from r into
// newly allocated blocks. All-zero blocks become holes.
func (w *Writer) Put(ctx context.Context, r io.Reader, size int64) (fstree.Content, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.finished {
		return nil, errors.New("ext4: Put after Finish")
	}
	if size < 0 || uint64(size) > maxFileBlks*blockSize {
		return nil, fmt.Errorf("ext4: file size %d out of range (ext4 with 4 KiB blocks holds at most 16 TiB)", size)
	}
	c := &content{w: w, size: size}
	if err := w.fill(ctx, c, r); err != nil {
		w.releaseLocked(c)
		return nil, err
	}
	return c, nil
}

func (w *Writer) fill(ctx context.Context, c *content, r io.Reader) error {
	crc := uint32(0)
	for off := int64(0); off < c.size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := int(min(int64(len(w.buf)), c.size-off))
		if got, err := io.ReadFull(r, w.buf[:n]); err != nil {
			return fmt.Errorf("ext4: reading file data at byte %d of %d: %w", off+int64(got), c.size, err)
		}
		crc = crc32.Update(crc, castagnoli, w.buf[:n])
		nb := (n + blockSize - 1) / blockSize
		clear(w.buf[n : nb*blockSize])
		base := uint64(off / blockSize)
		for i := 0; i < nb; {
			if bytes.Equal(w.buf[i*blockSize:(i+1)*blockSize], zeroBlock[:]) {
				i++
				continue
			}
			j := i + 1
			for j < nb && !bytes.Equal(w.buf[j*blockSize:(j+1)*blockSize], zeroBlock[:]) {
				j++
			}
			if err := w.writeRun(c, base+uint64(i), w.buf[i*blockSize:j*blockSize]); err != nil {
				return err
			}
			i = j
		}
		off += int64(n)
	}
	c.crc = crc
	return nil
}

// writeRun stores whole blocks for logical block lblk onwards.
func (w *Writer) writeRun(c *content, lblk uint64, data []byte) error {
	for len(data) > 0 {
		r := w.alloc.alloc(uint64(len(data) / blockSize))
		if w.alloc.limit > 0 && r.start+r.len > w.alloc.limit {
			w.alloc.release(r)
			return w.tooSmall(r.start + r.len)
		}
		k := int(r.len) * blockSize
		if err := w.writeAt(data[:k], int64(r.start)*blockSize); err != nil {
			w.alloc.release(r)
			return fmt.Errorf("ext4: writing file data: %w", err)
		}
		c.appendRun(lblk, r)
		lblk += r.len
		data = data[k:]
	}
	return nil
}

func (w *Writer) tooSmall(needBlocks uint64) error {
	return &SizeError{Need: int64(needBlocks * blockSize), Size: w.opts.Size}
}

// SizeError is the data written so far not fitting a fixed Size.
type SizeError struct {
	Need int64 // bytes needed so far (more are, when the tree is not all in)
	Size int64
}

func (e *SizeError) Error() string {
	return fmt.Sprintf("ext4: tree needs %d bytes but --size is %d; raise --size or omit it", e.Need, e.Size)
}

// Release implements fstree.Store: the content's blocks are reused by later
// Puts. Content from another store, or released twice, is ignored.
func (w *Writer) Release(fc fstree.Content) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if c, ok := fc.(*content); ok && c.w == w {
		w.releaseLocked(c)
	}
}

func (w *Writer) releaseLocked(c *content) {
	if c.released || w.finished {
		return
	}
	c.released = true
	for _, e := range c.extents() {
		w.alloc.release(run{e.phys, uint64(e.len)})
	}
	c.more, c.n = nil, 0
}

// Open implements fstree.Opener: it reads back stored content (holes read
// as zeros).
func (w *Writer) Open(fc fstree.Content) (io.ReaderAt, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.openLocked(fc)
}

func (w *Writer) openLocked(fc fstree.Content) (io.ReaderAt, error) {
	c, ok := fc.(*content)
	if !ok || c.w != w {
		return nil, fmt.Errorf("ext4: content %T was not stored by this writer", fc)
	}
	if c.released {
		return nil, errors.New("ext4: content was released")
	}
	if err := w.flush(); err != nil {
		return nil, fmt.Errorf("ext4: writing file data: %w", err)
	}
	return &extentReader{r: w.f, ext: c.extents(), size: c.size, bs: blockSize}, nil
}

// Import copies content from another store into the image and returns the
// new handle; Finish does the same for foreign content when Options.Source
// is set.
func (w *Writer) Import(ctx context.Context, c fstree.Content, src fstree.Opener) (fstree.Content, error) {
	ra, err := src.Open(c)
	if err != nil {
		return nil, fmt.Errorf("ext4: opening content to import: %w", err)
	}
	return w.Put(ctx, io.NewSectionReader(ra, 0, c.Size()), c.Size())
}

// extentReader reads a file through its extents; unmapped ranges are zeros.
type extentReader struct {
	r    io.ReaderAt
	ext  []extent // sorted by logical
	size int64
	bs   int64
}

func (e *extentReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("ext4: negative offset")
	}
	if off >= e.size {
		return 0, io.EOF
	}
	var err error
	if int64(len(p)) > e.size-off {
		p = p[:e.size-off]
		err = io.EOF
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		lblk := uint64(pos / e.bs)
		i := sort.Search(len(e.ext), func(i int) bool {
			return uint64(e.ext[i].logical)+uint64(e.ext[i].len) > lblk
		})
		if i == len(e.ext) || uint64(e.ext[i].logical) > lblk {
			// a hole up to the next extent
			end := int64(len(p))
			if i < len(e.ext) {
				end = min(end, int64(e.ext[i].logical)*e.bs-off)
			}
			clear(p[n:end])
			n = int(end)
			continue
		}
		x := e.ext[i]
		within := pos - int64(x.logical)*e.bs
		avail := int64(x.len)*e.bs - within
		k := int(min(avail, int64(len(p)-n)))
		if _, rerr := e.r.ReadAt(p[n:n+k], int64(x.phys)*e.bs+within); rerr != nil {
			return n, fmt.Errorf("ext4: reading block %d: %w", x.phys, rerr)
		}
		n += k
	}
	return n, err
}
