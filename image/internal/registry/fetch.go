package registry

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/image/internal/blob"
	"github.com/docker2vm/docker2vm/internal/console"
)

// Parallel layer downloads. A registry image's layers are fetched over
// several connections at once, in layer order, from the moment the first
// one is opened, while the layers before them are applied. A large layer
// is fetched in segments (Range requests), each on a connection of its
// own, so that the layers arrive one after another at the link's full
// rate rather than side by side at one connection's: the layer applied
// next is always the one arriving fastest, and little is left to apply
// once the last byte is in. Small layers are one request each, several at
// a time, as containerd and skopeo fetch them.
//
// Each layer's download writes the blob to a spool file, each segment at
// its own offset: a temporary file of the blob cache, which becomes the
// cache entry once its digest and size check out, or under NoCache an
// unnamed temporary file (removed as soon as it is created, so that nothing
// is left behind, whatever happens to the process). The digest is computed
// over the spool's contiguous prefix as it grows.
//
// OpenLayer hands out a reader of the spool that follows the download: the
// contiguous prefix that has arrived at once, the rest as it arrives. The
// download of the layer being read runs at most a window ahead of its
// reader (see download.ahead), so that a reader that stops early (a limit)
// has not made it fetch the whole blob: a segment beyond the window waits,
// and a later layer's segment takes its connection; the one the reader
// needs next starts at once. The others run at the network's speed. Every
// byte handed out is verified again by the layer stream (its digest and
// the diff ID), as for any source.
//
// Failures: a transfer is retried and resumed as always (blobBody; a
// segment resumes within its range). A download that fails for good, or
// whose bytes do not match their digest, stops every other download at
// once and is what the reader of the layer being applied gets: the run
// fails early, naming the layer that failed. A temporary file is never
// renamed into the cache unless its bytes are right; cancelling the
// context or closing the image stops every download and removes their
// temporary files.
//
// Registries that ignore Range (or answer another range than the one asked
// for): until one has answered a Range request, only a layer's first
// segment is asked for, and the layers after it wait for that answer. A
// 206 lets the other segments start; a whole blob is the layer's download
// (its first segment takes on the others), and from then on every blob is
// asked for whole, one request each, with no Range even to resume. So such
// a registry costs one blob's bytes per blob, not one per segment.

// DefaultParallelDownloads is how many transfers (layers, or segments of
// a large layer) run at once when Config.ParallelDownloads is 0 and
// $DOCKER2VM_PARALLEL_DOWNLOADS is unset: as many as skopeo's and a
// browser's connections to one host. On the benchmark's simulated link
// (15 MB/s per connection, 60 MB/s shared) 4 left a quarter of the link
// unused between requests; 6 fill it.
const DefaultParallelDownloads = 6

// ParallelDownloadsEnv names the environment variable that sets the number
// of parallel downloads when Config.ParallelDownloads is 0.
const ParallelDownloadsEnv = "DOCKER2VM_PARALLEL_DOWNLOADS"

// maxParallelDownloads bounds the setting: registries limit connections.
const maxParallelDownloads = 32

// aheadPer is how far the download of a layer that is being read may run
// ahead of a reader that has read less than that.
const aheadPer = 16 << 20

// Segment sizes: a layer is split in as many segments as there are
// connections, each at least minSegment (a request costs a round trip:
// smaller layers are one request) and at most maxSegment (so that the
// segments of a layer being read from its start fit its first window).
const (
	minSegment = 4 << 20
	maxSegment = 16 << 20
)

// ParseParallelDownloads reads a number of parallel downloads: 1 to 32.
func ParseParallelDownloads(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 1 || n > maxParallelDownloads {
		return 0, hint.New(err, []string{fmt.Sprintf("Give a number from 1 (one download at a time) to %d.", maxParallelDownloads)},
			"invalid number of parallel downloads %q", s)
	}
	return n, nil
}

// parallelDownloads is opts.ParallelDownloads, else
// $DOCKER2VM_PARALLEL_DOWNLOADS, else the default.
func parallelDownloads(opts Config) (int, error) {
	switch {
	case opts.ParallelDownloads < 0 || opts.ParallelDownloads > maxParallelDownloads:
		return 0, hint.New(nil, nil, "invalid number of parallel downloads %d: it must be from 1 to %d", opts.ParallelDownloads, maxParallelDownloads)
	case opts.ParallelDownloads > 0:
		return opts.ParallelDownloads, nil
	}
	if v := os.Getenv(ParallelDownloadsEnv); strings.TrimSpace(v) != "" {
		n, err := ParseParallelDownloads(v)
		if err != nil {
			return 0, hint.New(err, []string{"Set " + ParallelDownloadsEnv + " to a number from 1 to " + strconv.Itoa(maxParallelDownloads) + ", or unset it."}, "%s", ParallelDownloadsEnv)
		}
		return n, nil
	}
	return DefaultParallelDownloads, nil
}

// SegmentBounds splits a blob of size bytes into the segments fetched
// over n connections: their ends, in order (the last is size). Segments
// are about size/n bytes, within [minSeg, maxSeg]; with one connection, or
// a blob smaller than two minimal segments, it is one ({size}); a blob of
// unknown size is one to its end, whatever it is ({0}).
func SegmentBounds(size int64, n int, minSeg, maxSeg int64) []int64 {
	if size <= 0 {
		return []int64{0}
	}
	if n <= 1 || size < 2*minSeg {
		return []int64{size}
	}
	seg := min(max((size+int64(n)-1)/int64(n), minSeg), maxSeg)
	k := (size + seg - 1) / seg
	seg = (size + k - 1) / k // even them out
	ends := make([]int64, 0, k)
	for end := seg; end < size; end += seg {
		ends = append(ends, end)
	}
	return append(ends, size)
}

// fetcher downloads the layers of one registry image.
type fetcher struct {
	s      *Store
	layers []v1.Descriptor
	names  []string
	max    int   // transfers at once
	minSeg int64 // segment sizes (see SegmentBounds)
	maxSeg int64
	ahead  int64                // see download.ahead
	fetch  func(*segment) error // fetches a segment: download.fetchSegment (tests replace it)
	ctx    context.Context      // every download's parent; cancelled with the first failure
	cancel context.CancelCauseFunc

	mu        sync.Mutex
	jobs      []*download // by layer; nil when not downloaded here (cached, or a repeat of another layer)
	scheduled []bool      // by layer: considered (started, or left to the cache)
	next      int         // the first layer schedule has not considered
	queue     []*segment  // segments not started yet, in order
	running   int         // segments being fetched
	failed    error       // the first download that failed for good
	failedBy  *download   // which one
	closed    bool
	wg        sync.WaitGroup
}

// newFetcher prepares the downloads of layers; they start with the first
// open, under ctx.
func newFetcher(ctx context.Context, s *Store, layers []v1.Descriptor, names []string) *fetcher {
	f := &fetcher{s: s, layers: layers, names: names, max: s.parallel,
		minSeg: minSegment, maxSeg: maxSegment, ahead: aheadPer,
		jobs: make([]*download, len(layers)), scheduled: make([]bool, len(layers))}
	if s.segment > 0 {
		f.minSeg, f.maxSeg = s.segment, s.segment
	}
	f.ctx, f.cancel = context.WithCancelCause(ctx)
	return f
}

// schedule starts segments while fewer than max run: the first queued one
// that may start (one of a layer being read may have to wait for its
// reader: see mayStart), adding the next layer's download when none may.
// Layers the cache holds are left to the reader (the cache verifies them
// when they are opened), and so is a layer whose blob an earlier layer
// already downloads into the cache. Called with f.mu held.
func (f *fetcher) schedule() {
	for f.running < f.max && !f.closed && f.failed == nil {
		k := slices.IndexFunc(f.queue, func(sg *segment) bool { return sg.d.mayStart(sg) })
		if k < 0 {
			if f.s.client.ranges.Load() == rangesUnknown && len(f.queue) > 0 && f.queue[0].start > 0 {
				// A first segment's answer is about to tell whether the
				// others may start: later layers do not take their
				// connections meanwhile.
				return
			}
			if f.next >= len(f.layers) {
				return
			}
			i := f.next
			f.next++
			f.consider(i)
			continue
		}
		sg := f.queue[k]
		f.queue = slices.Delete(f.queue, k, k+1)
		f.startSegment(sg)
	}
}

// kick is called by the reader of d when it has moved on: segments that
// waited for it may start now, and the one it waits for starts at once,
// however many run.
func (f *fetcher) kick(d *download) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || f.failed != nil {
		return
	}
	d.mu.Lock()
	var front *segment
	if d.front < len(d.segs) && !d.segs[d.front].started {
		front = d.segs[d.front]
	}
	d.mu.Unlock()
	if k := slices.Index(f.queue, front); front != nil && k >= 0 {
		f.queue = slices.Delete(f.queue, k, k+1)
		f.startSegment(front)
	}
	f.schedule()
}

// consider adds layer i's download unless the cache has it, or will have
// it from an earlier layer's. Called with f.mu held.
func (f *fetcher) consider(i int) {
	if f.scheduled[i] {
		return
	}
	f.scheduled[i] = true
	if f.s.cache != nil && (f.s.cache.has(f.layers[i]) || f.repeats(i)) {
		return
	}
	f.add(i)
}

// repeats reports whether an earlier layer has layer i's blob.
func (f *fetcher) repeats(i int) bool {
	for j := range i {
		if f.layers[j].Digest == f.layers[i].Digest {
			return true
		}
	}
	return false
}

// add creates layer i's download and queues its segments. Called with f.mu
// held.
func (f *fetcher) add(i int) {
	d := &download{f: f, desc: f.layers[i], what: f.names[i], index: i, refs: 2, parked: -1, h: sha256.New()}
	d.cond.L = &d.mu
	d.ctx, d.cancel = context.WithCancel(f.ctx)
	f.jobs[i] = d
	if err := d.createSpool(); err != nil {
		d.fetchErr = err
		f.end(d)
		return
	}
	n := f.max
	if f.s.client.rangesIgnored() {
		n = 1
	}
	var start int64
	for _, end := range SegmentBounds(d.desc.Size, n, f.minSeg, f.maxSeg) {
		sg := &segment{d: d, start: start, end: end}
		d.segs = append(d.segs, sg)
		f.queue = append(f.queue, sg)
		start = end
	}
	d.left = len(d.segs)
	d.bar = f.s.progress.Start(d.what, d.desc.Size, i)
}

// startSegment starts fetching sg. Called with f.mu held.
func (f *fetcher) startSegment(sg *segment) {
	sg.d.mu.Lock()
	sg.started = true
	sg.d.mu.Unlock()
	f.running++
	sg.d.active++
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		fetch := sg.d.fetchSegment
		if f.fetch != nil {
			fetch = f.fetch
		}
		f.segmentDone(sg, fetch(sg))
	}()
}

// segmentDone is called by each segment when it ends, with its error. The
// download ends with its last segment, or, after a failure, with the last
// one running.
func (f *fetcher) segmentDone(sg *segment, err error) {
	d := sg.d
	if err != nil {
		d.cancel() // its other segments are of no use now
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.running--
	d.active--
	if err == nil {
		d.left--
	} else if d.fetchErr == nil {
		d.fetchErr = err
	}
	if d.fetchErr != nil {
		f.unqueue(d)
	}
	if d.active == 0 && (d.fetchErr != nil || d.left == 0) {
		f.end(d)
	}
	f.schedule()
}

// absorb makes sg, which is being sent the whole blob, run on over the
// segments after it that have not started (up to the next one that has,
// or the blob's end), drops those, and returns sg's new end.
func (f *fetcher) absorb(sg *segment) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := sg.d
	d.mu.Lock()
	defer d.mu.Unlock()
	k := slices.Index(d.segs, sg)
	j := k + 1
	for j < len(d.segs) && !d.segs[j].started {
		j++
	}
	if k < 0 || j == k+1 {
		return sg.end
	}
	gone := d.segs[k+1 : j]
	f.queue = slices.DeleteFunc(f.queue, func(q *segment) bool { return slices.Contains(gone, q) })
	sg.end = gone[len(gone)-1].end
	d.left -= len(gone)
	d.segs = slices.Delete(d.segs, k+1, j) // d.front <= k: sg is not complete
	return sg.end
}

// rangesKnown starts the segments (or the later layers) that waited to
// learn whether the registry honours Range (see mayStart, schedule).
func (f *fetcher) rangesKnown() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.schedule()
}

// unqueue drops d's segments that have not started. Called with f.mu held.
func (f *fetcher) unqueue(d *download) {
	f.queue = slices.DeleteFunc(f.queue, func(sg *segment) bool { return sg.d == d })
}

// end ends d: verified and published into the cache when every segment
// arrived, failed otherwise. A failure for good cancels the other
// downloads: the run fails. Called with f.mu held, once per download, when
// none of its segments runs.
func (f *fetcher) end(d *download) {
	if d.ended {
		return
	}
	d.ended = true
	err := d.fetchErr
	if err == nil {
		err = d.complete()
	}
	if err == nil {
		d.bar.Finish()
	} else {
		d.discard()
		d.bar.Abandon()
	}
	d.mu.Lock()
	d.done, d.err = true, err
	d.cond.Broadcast()
	d.mu.Unlock()
	if err != nil && f.failed == nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		f.failed, f.failedBy = err, d
		f.cancel(err) // the run fails: stop the other downloads now
		// Those with segments running end with them; end the others,
		// whose readers would wait for them.
		f.queue = nil
		for _, o := range f.jobs {
			if o != nil && !o.ended && o.active == 0 {
				if o.fetchErr == nil {
					o.fetchErr = context.Canceled
				}
				f.end(o)
			}
		}
	}
	d.unref() // the download's reference
}

// open returns a reader of layer i's download, starting the downloads if
// they have not started; ctx is the reader's (cancelling it stops the
// reader). A layer that is not downloaded here is read through the cache
// (blob).
func (f *fetcher) open(ctx context.Context, i int) (io.ReadCloser, error) {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil, errors.New("image is closed")
	}
	if f.failed != nil {
		err := f.failed
		f.mu.Unlock()
		return nil, err
	}
	f.consider(i) // opened out of order: wanted now, whatever runs
	d := f.jobs[i]
	if d != nil && d.opened {
		d = nil // a second open of the same layer: read it again from the cache or the registry
	}
	var r *spoolReader
	if d != nil {
		// The reader is attached first: the segments of its layer
		// that are far ahead of it wait while others start.
		d.opened = true
		r = d.reader(ctx)
	}
	f.schedule()
	if d != nil && d.active == 0 && !d.ended {
		f.startNow(d)
	}
	f.mu.Unlock()
	if d == nil {
		return f.s.Blob(ctx, f.layers[i], f.names[i])
	}
	return r, nil
}

// startNow starts the first queued segment of d, however many run: it is
// being read. Called with f.mu held.
func (f *fetcher) startNow(d *download) {
	if k := slices.IndexFunc(f.queue, func(sg *segment) bool { return sg.d == d }); k >= 0 {
		sg := f.queue[k]
		f.queue = slices.Delete(f.queue, k, k+1)
		f.startSegment(sg)
	}
}

// close stops every download, waits for them and releases their files.
func (f *fetcher) close() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.cancel(context.Canceled)
	f.wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queue = nil
	for _, d := range f.jobs {
		if d == nil {
			continue
		}
		if !d.ended { // segments that never started
			if d.fetchErr == nil {
				d.fetchErr = context.Canceled
			}
			f.end(d)
		}
		if !d.opened {
			d.opened = true
			d.unref() // the reader that never came
		}
	}
}

// failure is what a reader of a download that ended with err returns:
// when the downloads were stopped because another one failed, that
// failure.
func (f *fetcher) failure(err error) error {
	if errors.Is(err, context.Canceled) {
		if cause := context.Cause(f.ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			return cause
		}
	}
	return err
}

// otherFailure is the failure of another download than d, if one failed
// for good.
func (f *fetcher) otherFailure(d *download) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failed != nil && f.failedBy != d {
		return f.failed
	}
	return nil
}

// segment is bytes [start, end) of a download (end 0: to the blob's end,
// whose size is unknown).
type segment struct {
	d          *download
	start, end int64
	n          int64 // bytes written (download.mu)
	started    bool  // download.mu
}

// complete reports whether every byte of sg was written. Called with
// download.mu held.
func (sg *segment) complete() bool {
	return sg.end > 0 && sg.start+sg.n == sg.end
}

// download is one layer blob being fetched into its spool file.
type download struct {
	f      *fetcher
	desc   v1.Descriptor
	what   string
	index  int // the layer's
	ctx    context.Context
	cancel context.CancelFunc
	cw     *cacheWriter // the spool's cache entry to be; nil under NoCache
	bar    *console.Download
	segs   []*segment

	// fetcher.mu
	opened   bool  // a reader was handed out
	active   int   // segments running
	left     int   // segments not complete
	fetchErr error // the first segment's failure
	ended    bool

	mu      sync.Mutex
	cond    sync.Cond
	file    *os.File // the spool
	front   int      // the first segment not complete
	n       int64    // the contiguous prefix of the spool: bytes 0 to n are in
	done    bool
	err     error // why it ended, when it failed
	reading bool  // a reader is attached
	readPos int64 // how far it has read
	parked  int64 // the start of a segment that waits for the reader; -1: none
	refs    int   // the download and its reader: the file is closed at 0

	released bool

	// The digest of the prefix, computed by one segment at a time
	// (hashing, under mu) as it grows.
	h       hash.Hash
	hashed  int64
	hashing bool
	hashErr error
	scratch []byte
}

// createSpool creates the file the segments write into.
func (d *download) createSpool() error {
	if c := d.f.s.cache; c != nil {
		w, err := c.newWriter()
		if err != nil {
			return fmt.Errorf("%s: %w", d.what, err)
		}
		d.cw, d.file = w, w.f
		return nil
	}
	tf, err := os.CreateTemp("", ".docker2vm-download-*")
	if err != nil {
		return hint.New(err, []string{"Free disk space or set TMPDIR to a directory with room, or drop --no-cache."}, "%s: cannot create a temporary file to download into", d.what)
	}
	os.Remove(tf.Name()) // unnamed: nothing is left behind
	d.file = tf
	return nil
}

// fetchSegment fetches sg into the spool.
func (d *download) fetchSegment(sg *segment) error {
	stopWake := context.AfterFunc(d.ctx, d.wake)
	defer stopWake()
	// A reader may have attached since the segment was scheduled: then
	// wait before asking, not only before writing (the answer would fill
	// the socket's buffers meanwhile).
	if err := d.waitForReader(sg.start); err != nil {
		return err
	}
	c := d.f.s.client
	known := c.ranges.Load() != rangesUnknown
	src, err := c.blobRange(d.ctx, d.desc, d.what, sg.start, sg.end)
	if err != nil {
		return err
	}
	defer src.Close()
	if src.whole && sg.end > 0 {
		// The registry sends the whole blob (it ignores Range): this
		// segment takes on those after it that have not started.
		src.extend(d.f.absorb(sg))
	}
	if !known && c.ranges.Load() != rangesUnknown {
		d.f.rangesKnown() // the segments that waited for it may start
	}
	buf := make([]byte, 256<<10)
	off := sg.start
	for {
		if err := d.waitForReader(off); err != nil {
			return err
		}
		k, rerr := src.Read(buf)
		if k > 0 {
			if d.desc.Size > 0 && off+int64(k) > d.desc.Size {
				return &blob.IntegrityError{What: d.what, Msg: fmt.Sprintf("more than the %d bytes its descriptor states", d.desc.Size)}
			}
			if _, err := d.file.WriteAt(buf[:k], off); err != nil {
				return fmt.Errorf("%s: writing the download to %s: %w", d.what, d.file.Name(), err)
			}
			d.wrote(sg, buf[:k], off)
			off += int64(k)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	if sg.end == 0 {
		// The blob's size is unknown: the last segment's end is its end.
		d.mu.Lock()
		sg.end = off
		if off == sg.start {
			sg.end = -1 // empty: complete
		}
		d.advance()
		d.mu.Unlock()
		d.hashPrefix(nil, 0)
	}
	if d.desc.Size > 0 && sg.end > 0 && off != sg.end {
		return &blob.IntegrityError{What: d.what, Msg: fmt.Sprintf("%d bytes, expected %d", off, d.desc.Size)}
	}
	return nil
}

// wrote records p, written at off by sg, and hashes what became
// contiguous.
func (d *download) wrote(sg *segment, p []byte, off int64) {
	d.mu.Lock()
	sg.n += int64(len(p))
	d.advance()
	d.mu.Unlock()
	d.bar.Add(len(p))
	d.hashPrefix(p, off)
}

// advance moves the contiguous prefix past the segments now complete.
// Called with d.mu held.
func (d *download) advance() {
	for d.front < len(d.segs) && (d.segs[d.front].complete() || d.segs[d.front].end < 0) {
		d.front++
	}
	if d.front < len(d.segs) {
		sg := d.segs[d.front]
		d.n = sg.start + sg.n
	} else if len(d.segs) > 0 {
		last := d.segs[len(d.segs)-1]
		d.n = last.start + last.n
	}
	d.cond.Broadcast()
}

// hashPrefix hashes the contiguous prefix up to where it is now, unless a
// segment does already (it goes on until it has caught up). p, just
// written at off, is hashed from memory when it is next; the rest is read
// back from the spool (the page cache).
func (d *download) hashPrefix(p []byte, off int64) {
	d.mu.Lock()
	if d.hashing {
		d.mu.Unlock()
		return
	}
	d.hashing = true
	for d.hashed < d.n && d.hashErr == nil {
		from, to := d.hashed, d.n
		d.mu.Unlock()
		var err error
		if from == off && off+int64(len(p)) <= to {
			d.h.Write(p)
			from += int64(len(p))
			p = nil
		}
		for from < to && err == nil {
			if d.scratch == nil {
				d.scratch = make([]byte, 256<<10)
			}
			b := d.scratch[:min(int64(len(d.scratch)), to-from)]
			var k int
			k, err = d.file.ReadAt(b, from)
			d.h.Write(b[:k])
			from += int64(k)
			if err == io.EOF && from == to {
				err = nil
			}
		}
		d.mu.Lock()
		d.hashed = from
		if err != nil {
			d.hashErr = fmt.Errorf("%s: reading the download back from %s: %w", d.what, d.file.Name(), err)
		}
	}
	d.hashing = false
	d.mu.Unlock()
}

// complete checks the whole spool against the descriptor and publishes it
// into the cache. Called once every segment is complete.
func (d *download) complete() error {
	d.mu.Lock()
	n, hashed, herr := d.n, d.hashed, d.hashErr
	d.mu.Unlock()
	if herr != nil {
		return herr
	}
	if hashed != n {
		return fmt.Errorf("%s: %d bytes hashed of %d (a bug)", d.what, hashed, n)
	}
	if d.desc.Size > 0 && n != d.desc.Size {
		return &blob.IntegrityError{What: d.what, Msg: fmt.Sprintf("%d bytes, expected %d", n, d.desc.Size)}
	}
	if got := blob.HashOf(d.h); got != d.desc.Digest {
		return &blob.IntegrityError{What: d.what, Msg: "got " + got.String()}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cw != nil {
		// Best effort: a blob that cannot be cached is still read.
		if d.cw.publish(d.desc.Digest) != nil {
			os.Remove(d.cw.f.Name())
		}
		d.cw = nil
	}
	return nil
}

// discard removes the spool's name from the cache: it is not an entry,
// and never will be. The open file stays readable.
func (d *download) discard() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cw != nil {
		os.Remove(d.cw.f.Name())
		d.cw = nil
	}
}

func (d *download) wake() {
	d.mu.Lock()
	d.cond.Broadcast()
	d.mu.Unlock()
}

// ahead reports whether a segment that would write at off must wait for
// the reader: it is a window or more behind, the window being f.ahead or
// as much as it has read already, whichever is more. A reader that stops
// early (a limit) has made the download fetch at most that much more; one
// that goes on widens the window at once, so that the segments of a large
// layer soon all run. Called with d.mu held.
func (d *download) ahead(off int64) bool {
	return d.reading && off-d.readPos >= max(d.f.ahead, d.readPos)
}

// mayStart reports whether sg may start now: not while it is ahead of
// the reader (see ahead; the reader kicks the fetcher once it may), and,
// unless it is a layer's first, not before the registry has honoured a
// Range request (a registry that ignores them sends a first segment the
// whole blob, and that segment takes on the others: see absorb).
func (d *download) mayStart(sg *segment) bool {
	if sg.start > 0 && !d.f.s.client.rangesHonoured() {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.ahead(sg.start) {
		return true
	}
	if d.parked < 0 || sg.start < d.parked {
		d.parked = sg.start
	}
	return false
}

// waitForReader holds a segment that would write at off back while it is
// ahead of the reader.
func (d *download) waitForReader(off int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for d.ahead(off) {
		if err := d.ctx.Err(); err != nil {
			return err
		}
		d.cond.Wait()
	}
	return d.ctx.Err()
}

func (d *download) unref() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.refs--
	if d.refs == 0 && !d.released {
		d.released = true
		if d.cw != nil {
			os.Remove(d.cw.f.Name()) // never published
			d.cw = nil
		}
		if d.file != nil {
			d.file.Close()
		}
	}
}

// reader attaches a reader to the download; ctx stops it.
func (d *download) reader(ctx context.Context) *spoolReader {
	d.mu.Lock()
	d.reading, d.readPos = true, 0
	d.mu.Unlock()
	r := &spoolReader{d: d, ctx: ctx}
	r.stopWake = context.AfterFunc(ctx, d.wake)
	return r
}

// spoolReader reads a download's spool as it grows.
type spoolReader struct {
	d        *download
	ctx      context.Context
	pos      int64
	stopWake func() bool
	closed   bool
}

func (r *spoolReader) Read(p []byte) (int, error) {
	if r.closed {
		return 0, errors.New("read after close")
	}
	d := r.d
	d.mu.Lock()
	if r.pos >= d.n && !d.done && d.front < len(d.segs) && !d.segs[d.front].started {
		// What comes next has not started (it waited for this reader).
		d.mu.Unlock()
		d.f.kick(d)
		d.mu.Lock()
	}
	for r.pos >= d.n && !d.done {
		if err := r.ctx.Err(); err != nil {
			d.mu.Unlock()
			return 0, err
		}
		d.cond.Wait()
	}
	n, done, derr, file := d.n, d.done, d.err, d.file
	d.mu.Unlock()
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	if err := d.f.otherFailure(d); err != nil {
		return 0, err // the run fails: stop reading now
	}
	if done && derr != nil {
		return 0, d.f.failure(derr)
	}
	if r.pos < n {
		k, err := file.ReadAt(p[:min(int64(len(p)), n-r.pos)], r.pos)
		r.pos += int64(k)
		d.mu.Lock()
		d.readPos = r.pos
		d.cond.Broadcast()
		kick := d.parked >= 0 && !d.ahead(d.parked)
		if kick {
			d.parked = -1
		}
		d.mu.Unlock()
		if kick {
			d.f.kick(d) // segments that waited for this reader may start
		}
		if err != nil && err != io.EOF {
			return k, fmt.Errorf("%s: reading the download back from %s: %w", d.what, file.Name(), err)
		}
		return k, nil
	}
	return 0, io.EOF
}

// Close detaches the reader; a download it did not read to its end is
// stopped: nobody else wants it.
func (r *spoolReader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	r.stopWake()
	d := r.d
	d.mu.Lock()
	d.reading = false
	stop := !d.done
	d.cond.Broadcast()
	d.mu.Unlock()
	if stop {
		d.cancel()
	}
	d.unref()
	return nil
}
