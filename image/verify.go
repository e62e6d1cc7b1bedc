package image

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// shortHex renders a digest for messages.
func hashOf(h hash.Hash) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
}

func sha256Of(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

func checkAlgorithm(d v1.Hash, what string) error {
	if d.Algorithm != "sha256" {
		return newError(nil, []string{"Only sha256 digests are supported."}, "%s: unsupported digest algorithm %q", what, d.Algorithm)
	}
	return nil
}

// verifier passes r through, hashing it; it fails when more than size bytes
// arrive, and at EOF when fewer did or the hash differs from want. A
// negative size is not checked.
type verifier struct {
	r    io.Reader
	h    hash.Hash
	want v1.Hash
	size int64
	n    int64
	what string
	err  error // sticky result once EOF was seen
	done bool
	// stored: r reads the blob as stored (a file, the network), so its
	// errors are failures to read it (readError), not decompression
	// errors.
	stored bool
}

func newVerifier(r io.Reader, want v1.Hash, size int64, what string) (*verifier, error) {
	if err := checkAlgorithm(want, what); err != nil {
		return nil, err
	}
	return &verifier{r: r, h: sha256.New(), want: want, size: size, what: what}, nil
}

func (v *verifier) Read(p []byte) (int, error) {
	if v.done {
		if v.err != nil {
			return 0, v.err
		}
		return 0, io.EOF
	}
	if v.size >= 0 && int64(len(p)) > v.size-v.n+1 {
		p = p[:v.size-v.n+1] // read at most one byte past the size, to detect excess
	}
	n, err := v.r.Read(p)
	v.n += int64(n)
	v.h.Write(p[:n])
	if v.size >= 0 && v.n > v.size {
		v.done = true
		v.err = &integrityError{what: v.what, msg: fmt.Sprintf("more than the %d bytes its descriptor states", v.size)}
		return n, v.err
	}
	if err == io.EOF {
		v.done = true
		v.err = v.check()
		if v.err != nil {
			return n, v.err
		}
	} else if err != nil && !isReadError(err) {
		if v.stored {
			err = &readError{what: v.what, err: err}
		} else {
			err = fmt.Errorf("reading %s: %w", v.what, err)
		}
	}
	return n, err
}

// readError is a failure to read the stored bytes (the network, a disk):
// it says nothing about whether they are right.
type readError struct {
	what string
	err  error
}

func (e *readError) Error() string {
	var ie *integrityError
	if errors.Is(e.err, ErrNetwork) || errors.Is(e.err, context.Canceled) || errors.Is(e.err, context.DeadlineExceeded) || errors.As(e.err, &ie) {
		return e.err.Error() // names the blob already, or needs no more words
	}
	return "reading " + e.what + ": " + e.err.Error()
}
func (e *readError) Unwrap() error { return e.err }

// isReadError reports whether err is (or wraps) a failure to read stored
// bytes.
func isReadError(err error) bool {
	var re *readError
	return errors.As(err, &re)
}

func (v *verifier) check() error {
	if v.size >= 0 && v.n != v.size {
		return &integrityError{what: v.what, msg: fmt.Sprintf("%d bytes, expected %d", v.n, v.size)}
	}
	if got := hashOf(v.h); got != v.want {
		return &integrityError{what: v.what, msg: "got " + got.String()}
	}
	return nil
}

// readVerified reads a whole small blob (at most limit bytes) and checks it.
func readVerified(r io.Reader, desc v1.Descriptor, limit int64, what string) ([]byte, error) {
	if desc.Size > limit {
		return nil, newError(nil, nil, "%s is %d bytes, more than the %d allowed", what, desc.Size, limit)
	}
	size := desc.Size
	if size <= 0 {
		size = -1
	}
	v, err := newVerifier(io.LimitReader(r, limit+1), desc.Digest, size, what)
	if err != nil {
		return nil, err
	}
	v.stored = true
	b, err := io.ReadAll(v)
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, newError(nil, nil, "%s is more than the %d bytes allowed", what, limit)
	}
	return b, nil
}

// Magic numbers.
var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

func sniffCompression(head []byte) string {
	switch {
	case bytes.HasPrefix(head, gzipMagic):
		return "gzip"
	case bytes.HasPrefix(head, zstdMagic):
		return "zstd"
	}
	return "none"
}

// layerReader decompresses a verified layer stream and checks its DiffID.
type layerReader struct {
	ctx     context.Context
	cancel  context.CancelFunc // stops reading the stored blob (Abort)
	raw     io.ReadCloser      // the stored bytes
	comp    *verifier          // over raw
	tail    io.Reader          // comp as the decompressor reads it; drained to finish comp's check
	dec     io.Reader          // decompressed
	closeFn func()             // releases the decompressor
	diff    *verifier          // over dec; nil when not checked separately
	out     io.Reader
	pipes   []*aheadReader // read-ahead stages, stopped before raw is closed
	err     error          // sticky
	eof     bool
	closed  bool
}

// newLayerReader reads raw, which cancel stops reading (ctx is raw's
// context, or its parent).
func newLayerReader(ctx context.Context, cancel context.CancelFunc, raw io.ReadCloser, desc v1.Descriptor, diffID v1.Hash, what string) (*layerReader, error) {
	comp, err := newVerifier(raw, desc.Digest, desc.Size, what)
	if err != nil {
		raw.Close()
		cancel()
		return nil, err
	}
	comp.stored = true
	br := bufio.NewReaderSize(comp, 64<<10)
	head, err := br.Peek(4)
	if err != nil && err != io.EOF {
		raw.Close()
		cancel()
		return nil, err
	}
	lr := &layerReader{ctx: ctx, cancel: cancel, raw: raw, comp: comp, tail: br}
	var kind = sniffCompression(head)
	if kind != "none" {
		// Reading and hashing the stored blob is a stage of its own, so
		// that it overlaps decompression.
		s0 := readAhead(br)
		lr.pipes = append(lr.pipes, s0)
		lr.tail = s0
	}
	switch kind {
	case "gzip":
		zr, err := gzip.NewReader(bufio.NewReaderSize(lr.tail, 64<<10))
		if err != nil {
			lr.abort()
			return nil, fmt.Errorf("%s: bad gzip stream: %w", what, err)
		}
		lr.dec, lr.closeFn = zr, func() { zr.Close() }
	case "zstd":
		zopts := []zstd.DOption{zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(256 << 20)}
		if diffID.Hex != "" {
			// The frame checksum (xxhash) is redundant when the
			// decompressed bytes are checked against their diff ID.
			zopts = append(zopts, zstd.IgnoreChecksum(true))
		}
		zr, err := zstd.NewReader(bufio.NewReaderSize(lr.tail, 64<<10), zopts...)
		if err != nil {
			lr.abort()
			return nil, fmt.Errorf("%s: bad zstd stream: %w", what, err)
		}
		lr.dec, lr.closeFn = zr, zr.Close
	default:
		lr.dec = br
	}
	// Stages (see readAhead): reading and hashing the blob in one
	// goroutine, decompressing it in a second, hashing the decompressed
	// bytes in a third, the caller in a fourth.
	var dec io.Reader = lr.dec
	var diff *verifier
	if diffID.Hex != "" && (kind != "none" || diffID != desc.Digest) {
		if err := checkAlgorithm(diffID, what); err != nil {
			lr.abort()
			return nil, err
		}
		s1 := readAhead(lr.dec)
		lr.pipes = append(lr.pipes, s1)
		diff, _ = newVerifier(s1, diffID, -1, what+" (uncompressed, diff ID "+diffID.String()+")")
		dec = diff
	}
	s := readAhead(dec)
	lr.pipes = append(lr.pipes, s)
	lr.diff, lr.out = diff, s
	return lr, nil
}

func (l *layerReader) Read(p []byte) (int, error) {
	if l.err != nil {
		return 0, l.err
	}
	if l.eof {
		return 0, io.EOF
	}
	if err := l.ctx.Err(); err != nil {
		l.err = err
		return 0, err
	}
	n, err := l.out.Read(p)
	if err == io.EOF {
		// The decompressor may stop before the end of the stored blob
		// (padding, trailing frames): read it to the end so its digest
		// is checked.
		if _, derr := io.Copy(io.Discard, l.tail); derr != nil {
			l.err = derr
			return n, derr
		}
		l.eof = true
		return n, io.EOF
	}
	if err != nil {
		switch {
		case errors.Is(err, ErrDigestMismatch):
		case isReadError(err) || l.ctx.Err() != nil:
			// The stored bytes could not be read (a registry transfer
			// that failed for good, a disk error) or the run was
			// cancelled: nothing is known about the bytes.
		default:
			// A broken stream (bad gzip data...) is most likely a
			// corrupt blob: say which.
			if verr := l.finishCompressed(); verr != nil {
				err = verr
			} else if l.diff != nil && !l.diff.done {
				// The stored bytes match their digest but do not
				// decompress: they cannot match the diff ID either.
				err = &integrityError{what: l.comp.what, msg: fmt.Sprintf("the layer does not decompress (%v), so it cannot match diff ID %s", errors.Unwrap(err), l.diff.want)}
			} else {
				err = fmt.Errorf("%s: %w", l.comp.what, err)
			}
		}
		l.err = err
	}
	return n, err
}

// finishCompressed reads the rest of the stored blob and returns its
// verification error, or the error that kept it from being read to the
// end (then the decompressor's complaint proves nothing), if any.
func (l *layerReader) finishCompressed() error {
	_, err := copyCtx(l.ctx, io.Discard, l.tail)
	if errors.Is(err, ErrDigestMismatch) || isReadError(err) || (err != nil && l.ctx.Err() != nil) {
		return err
	}
	return nil
}

// abort releases a stream that is not handed out: no reads, no checks.
func (l *layerReader) abort() {
	l.err = errAborted
	l.Abort()
}

var errAborted = errors.New("layer stream aborted")

// Abort releases the stream at once, without reading what is left of it
// and so without finishing its digest checks: for a consumer that stopped
// for a reason of its own (a limit was exceeded, the run was cancelled)
// and discards what it read. A consumer that stopped because the stream
// looked wrong (a tar error) should call Close instead, whose verdict
// says whether the blob is corrupt. Close after Abort does nothing.
func (l *layerReader) Abort() {
	if l.closed {
		return
	}
	l.closed = true
	if l.err == nil {
		l.err = errAborted
	}
	l.cancel() // a registry read in progress returns now
	l.release()
}

// release stops the stages and closes the decompressor and the blob.
func (l *layerReader) release() error {
	for _, p := range l.pipes {
		p.wait()
	}
	if l.closeFn != nil {
		l.closeFn()
	}
	err := l.raw.Close()
	l.cancel()
	return err
}

// Close finishes the checks (reading what is left unless ctx is done) and
// releases the stream. It returns the digest mismatch, or the failure to
// read the stored blob, that ended the stream, if that is what did.
func (l *layerReader) Close() error {
	if l.closed {
		return nil
	}
	l.closed = true
	var err error
	if l.err == nil && !l.eof && l.ctx.Err() == nil {
		_, err = copyCtx(l.ctx, io.Discard, readerFunc(l.Read))
		if errors.Is(err, l.ctx.Err()) {
			err = nil
		}
	}
	if cerr := l.release(); err == nil && l.err == nil {
		err = cerr
	}
	if err == nil && l.err != nil && (errors.Is(l.err, ErrDigestMismatch) || (isReadError(l.err) && l.ctx.Err() == nil)) {
		// The verdict on the blob: corrupt, or not read to its end
		// (a registry transfer that failed for good, a disk error).
		err = l.err
	}
	return err
}

// AbortLayer releases a layer stream from Image.OpenLayer without
// finishing its checks (see the Abort method): call it instead of Close
// when the consumer stopped because a limit was exceeded or the run was
// cancelled, so that nothing more is downloaded or decompressed. On any
// other io.ReadCloser it calls Close.
func AbortLayer(rc io.ReadCloser) {
	if a, ok := rc.(interface{ Abort() }); ok {
		a.Abort()
		return
	}
	rc.Close()
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// copyCtx is io.Copy that stops when ctx is done.
func copyCtx(ctx context.Context, w io.Writer, r io.Reader) (int64, error) {
	buf := make([]byte, 128<<10)
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		n, err := r.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}
