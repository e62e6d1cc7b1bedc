package image

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/docker2vm/docker2vm/image/internal/blob"
)

// layerReader decompresses a verified layer stream and checks its DiffID.
type layerReader struct {
	ctx     context.Context
	cancel  context.CancelFunc // stops reading the stored blob (Abort)
	raw     io.ReadCloser      // the stored bytes
	comp    *blob.Verifier     // over raw
	tail    io.Reader          // comp as the decompressor reads it; drained to finish comp's check
	dec     io.Reader          // decompressed
	closeFn func()             // releases the decompressor
	diff    *blob.Verifier     // over dec; nil when not checked separately
	out     io.Reader
	pipes   []*aheadReader // read-ahead stages, stopped before raw is closed
	err     error          // sticky
	eof     bool
	closed  bool
}

// newLayerReader reads raw, which cancel stops reading (ctx is raw's
// context, or its parent).
func newLayerReader(ctx context.Context, cancel context.CancelFunc, raw io.ReadCloser, desc v1.Descriptor, diffID v1.Hash, what string) (*layerReader, error) {
	comp, err := blob.NewVerifier(raw, desc.Digest, desc.Size, what, true)
	if err != nil {
		raw.Close()
		cancel()
		return nil, err
	}
	br := bufio.NewReaderSize(comp, 64<<10)
	head, err := br.Peek(blob.MagicSize)
	if err != nil && err != io.EOF {
		raw.Close()
		cancel()
		return nil, err
	}
	lr := &layerReader{ctx: ctx, cancel: cancel, raw: raw, comp: comp, tail: br}
	var kind = blob.SniffCompression(head)
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
	var diff *blob.Verifier
	if diffID.Hex != "" && (kind != "none" || diffID != desc.Digest) {
		if err := blob.CheckAlgorithm(diffID, what); err != nil {
			lr.abort()
			return nil, err
		}
		s1 := readAhead(lr.dec)
		lr.pipes = append(lr.pipes, s1)
		diff, _ = blob.NewVerifier(s1, diffID, -1, what+" (uncompressed, diff ID "+diffID.String()+")", false)
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
		case errors.Is(err, blob.ErrDigestMismatch):
		case blob.IsReadError(err) || l.ctx.Err() != nil:
			// The stored bytes could not be read (a registry transfer
			// that failed for good, a disk error) or the run was
			// cancelled: nothing is known about the bytes.
		default:
			// A broken stream (bad gzip data...) is most likely a
			// corrupt blob: say which.
			if verr := l.finishCompressed(); verr != nil {
				err = verr
			} else if l.diff != nil && !l.diff.Done() {
				// The stored bytes match their digest but do not
				// decompress: they cannot match the diff ID either.
				err = &blob.IntegrityError{What: l.comp.What(), Msg: fmt.Sprintf("the layer does not decompress (%v), so it cannot match diff ID %s", errors.Unwrap(err), l.diff.Want())}
			} else {
				err = fmt.Errorf("%s: %w", l.comp.What(), err)
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
	_, err := blob.CopyCtx(l.ctx, io.Discard, l.tail)
	if errors.Is(err, blob.ErrDigestMismatch) || blob.IsReadError(err) || (err != nil && l.ctx.Err() != nil) {
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
		_, err = blob.CopyCtx(l.ctx, io.Discard, readerFunc(l.Read))
		if errors.Is(err, l.ctx.Err()) {
			err = nil
		}
	}
	if cerr := l.release(); err == nil && l.err == nil {
		err = cerr
	}
	if err == nil && l.err != nil && (errors.Is(l.err, ErrDigestMismatch) || (blob.IsReadError(l.err) && l.ctx.Err() == nil)) {
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
