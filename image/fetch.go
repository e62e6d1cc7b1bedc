package image

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Parallel layer downloads. A registry image's layers are fetched several
// at a time, in order, from the moment the first one is opened, while the
// layers before them are applied: containerd and skopeo do the same. Each
// download runs in a goroutine of its own and writes the blob to a spool
// file as it arrives, hashing it: a temporary file of the blob cache, which
// becomes the cache entry once its digest and size check out, or under
// NoCache an unnamed temporary file (removed as soon as it is created, so
// that nothing is left behind, whatever happens to the process).
//
// OpenLayer hands out a reader of the spool that follows the download: what
// has arrived so far at once, the rest as it arrives. The download of the
// layer being read runs at most streamAhead bytes ahead of its reader, so
// that a reader that stops early (a limit) has not made it fetch the whole
// blob; the others run at the network's speed. Every byte handed out is
// verified again by the layer stream (its digest and the diff ID), as for
// any source.
//
// Failures: a transfer is retried and resumed as always (blobBody). A
// download that fails for good, or whose bytes do not match their digest,
// stops every other download at once and is what the reader of the layer
// being applied gets: the run fails early, naming the layer that failed.
// A temporary file is never renamed into the cache unless its bytes are
// right; cancelling the context or closing the image stops every download
// and removes their temporary files.

// DefaultParallelDownloads is how many layers are downloaded at once when
// Options.ParallelDownloads is 0 and $DOCKER2VM_PARALLEL_DOWNLOADS is unset
// (containerd: 3, skopeo: 6).
const DefaultParallelDownloads = 4

// ParallelDownloadsEnv names the environment variable that sets the number
// of parallel downloads when Options.ParallelDownloads is 0.
const ParallelDownloadsEnv = "DOCKER2VM_PARALLEL_DOWNLOADS"

// maxParallelDownloads bounds the setting: registries limit connections.
const maxParallelDownloads = 32

// streamAhead is how far the download of a layer that is being read may
// run ahead of its reader.
const streamAhead = 16 << 20

// ParseParallelDownloads reads a number of parallel downloads: 1 to 32.
func ParseParallelDownloads(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 1 || n > maxParallelDownloads {
		return 0, newError(err, []string{fmt.Sprintf("Give a number from 1 (one download at a time) to %d.", maxParallelDownloads)},
			"invalid number of parallel downloads %q", s)
	}
	return n, nil
}

// parallelDownloads is opts.ParallelDownloads, else
// $DOCKER2VM_PARALLEL_DOWNLOADS, else the default.
func parallelDownloads(opts Options) (int, error) {
	switch {
	case opts.ParallelDownloads < 0 || opts.ParallelDownloads > maxParallelDownloads:
		return 0, newError(nil, nil, "invalid number of parallel downloads %d: it must be from 1 to %d", opts.ParallelDownloads, maxParallelDownloads)
	case opts.ParallelDownloads > 0:
		return opts.ParallelDownloads, nil
	}
	if v := os.Getenv(ParallelDownloadsEnv); strings.TrimSpace(v) != "" {
		n, err := ParseParallelDownloads(v)
		if err != nil {
			return 0, newError(err, []string{"Set " + ParallelDownloadsEnv + " to a number from 1 to " + strconv.Itoa(maxParallelDownloads) + ", or unset it."}, "%s", ParallelDownloadsEnv)
		}
		return n, nil
	}
	return DefaultParallelDownloads, nil
}

// fetcher downloads the layers of one registry image.
type fetcher struct {
	s      *registryStore
	layers []v1.Descriptor
	names  []string
	max    int
	ctx    context.Context // every download's parent; cancelled with the first failure
	cancel context.CancelCauseFunc

	mu        sync.Mutex
	jobs      []*download // by layer; nil when not downloaded here (cached, or a repeat of another layer)
	scheduled []bool      // by layer: considered (started, or left to the cache)
	next      int         // the first layer schedule has not considered
	running   int
	failed    error     // the first download that failed for good
	failedBy  *download // which one
	closed    bool
	wg        sync.WaitGroup
}

// newFetcher prepares the downloads of layers; they start with the first
// open, under ctx.
func newFetcher(ctx context.Context, s *registryStore, layers []v1.Descriptor, names []string) *fetcher {
	f := &fetcher{s: s, layers: layers, names: names, max: s.parallel,
		jobs: make([]*download, len(layers)), scheduled: make([]bool, len(layers))}
	f.ctx, f.cancel = context.WithCancelCause(ctx)
	return f
}

// schedule starts downloads, in layer order, while fewer than max run.
// Layers the cache holds are left to the reader (the cache verifies them
// when they are opened), and so is a layer whose blob an earlier layer
// already downloads into the cache. Called with f.mu held.
func (f *fetcher) schedule() {
	for f.running < f.max && f.next < len(f.layers) && !f.closed && f.failed == nil {
		i := f.next
		f.next++
		f.consider(i)
	}
}

// consider starts layer i's download unless the cache has it, or will
// have it from an earlier layer's. Called with f.mu held.
func (f *fetcher) consider(i int) {
	if f.scheduled[i] {
		return
	}
	f.scheduled[i] = true
	if f.s.cache != nil && (f.s.cache.has(f.layers[i]) || f.repeats(i)) {
		return
	}
	f.start(i)
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

// start begins the download of layer i. Called with f.mu held.
func (f *fetcher) start(i int) {
	d := &download{f: f, desc: f.layers[i], what: f.names[i], index: i, refs: 2}
	d.cond.L = &d.mu
	d.ctx, d.cancel = context.WithCancel(f.ctx)
	f.jobs[i] = d
	f.running++
	f.wg.Add(1)
	go d.run()
}

// finished is called by each download when it ends, with its error.
func (f *fetcher) finished(d *download, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.running--
	if err != nil && f.failed == nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		f.failed, f.failedBy = err, d
		f.cancel(err) // the run fails: stop the other downloads now
	}
	f.schedule()
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
	f.schedule()
	f.consider(i) // opened out of order: wanted now, whatever runs
	d := f.jobs[i]
	if d != nil && d.opened {
		d = nil // a second open of the same layer: read it again from the cache or the registry
	}
	if d != nil {
		d.opened = true
	}
	f.mu.Unlock()
	if d == nil {
		return f.s.blob(ctx, f.layers[i], f.names[i])
	}
	return d.reader(ctx), nil
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
	for _, d := range f.jobs {
		if d != nil && !d.opened {
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

// download is one layer blob being fetched into its spool file.
type download struct {
	f      *fetcher
	desc   v1.Descriptor
	what   string
	index  int // the layer's
	ctx    context.Context
	cancel context.CancelFunc
	opened bool // a reader was handed out (fetcher.mu)

	mu       sync.Mutex
	cond     sync.Cond
	file     *os.File // the spool
	n        int64    // bytes in the spool
	done     bool
	err      error // why it ended, when it failed
	reading  bool  // a reader is attached
	readPos  int64 // how far it has read
	refs     int   // the download and its reader: the file is closed at 0
	released bool
}

// run fetches the blob into the spool.
func (d *download) run() {
	defer d.f.wg.Done()
	stopWake := context.AfterFunc(d.ctx, d.wake)
	err := d.fetch()
	stopWake()
	d.mu.Lock()
	d.done, d.err = true, err
	d.cond.Broadcast()
	d.mu.Unlock()
	d.f.finished(d, err)
	d.unref()
}

func (d *download) wake() {
	d.mu.Lock()
	d.cond.Broadcast()
	d.mu.Unlock()
}

func (d *download) fetch() error {
	s := d.f.s
	var cw *cacheWriter
	if s.cache != nil {
		w, err := s.cache.newWriter()
		if err != nil {
			return fmt.Errorf("%s: %w", d.what, err)
		}
		cw = w
		d.setFile(w.f)
	} else {
		tf, err := os.CreateTemp("", ".docker2vm-download-*")
		if err != nil {
			return newError(err, []string{"Free disk space or set TMPDIR to a directory with room, or drop --no-cache."}, "%s: cannot create a temporary file to download into", d.what)
		}
		os.Remove(tf.Name()) // unnamed: nothing is left behind
		d.setFile(tf)
	}
	committed := false
	defer func() {
		if cw != nil && !committed {
			os.Remove(cw.f.Name()) // the open file stays readable
		}
	}()
	src, err := s.client.blob(d.ctx, d.desc, d.what)
	if err != nil {
		return err
	}
	rc := s.progress.wrap(src, d.what, d.desc.Size, d.index)
	defer rc.Close()
	h := sha256.New()
	buf := make([]byte, 256<<10)
	var n int64
	for {
		if err := d.waitForReader(n); err != nil {
			return err
		}
		k, rerr := rc.Read(buf)
		if k > 0 {
			if d.desc.Size > 0 && n+int64(k) > d.desc.Size {
				return &integrityError{what: d.what, msg: fmt.Sprintf("more than the %d bytes its descriptor states", d.desc.Size)}
			}
			if _, err := d.file.Write(buf[:k]); err != nil {
				return fmt.Errorf("%s: writing the download to %s: %w", d.what, d.file.Name(), err)
			}
			h.Write(buf[:k])
			n += int64(k)
			d.mu.Lock()
			d.n = n
			d.cond.Broadcast()
			d.mu.Unlock()
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	if d.desc.Size > 0 && n != d.desc.Size {
		return &integrityError{what: d.what, msg: fmt.Sprintf("%d bytes, expected %d", n, d.desc.Size)}
	}
	if got := hashOf(h); got != d.desc.Digest {
		return &integrityError{what: d.what, msg: "got " + got.String()}
	}
	if cw != nil {
		// Best effort: a blob that cannot be cached is still read.
		if cw.publish(d.desc.Digest) == nil {
			committed = true
		}
	}
	return nil
}

func (d *download) setFile(f *os.File) {
	d.mu.Lock()
	d.file = f
	d.mu.Unlock()
}

// waitForReader holds the download back while its reader is more than
// streamAhead bytes behind.
func (d *download) waitForReader(n int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for d.reading && n-d.readPos > streamAhead {
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
	if r.pos < n {
		k, err := file.ReadAt(p[:min(int64(len(p)), n-r.pos)], r.pos)
		r.pos += int64(k)
		d.mu.Lock()
		d.readPos = r.pos
		d.cond.Broadcast()
		d.mu.Unlock()
		if err != nil && err != io.EOF {
			return k, fmt.Errorf("%s: reading the download back from %s: %w", d.what, file.Name(), err)
		}
		return k, nil
	}
	if done && derr != nil {
		return 0, d.f.failure(derr)
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
