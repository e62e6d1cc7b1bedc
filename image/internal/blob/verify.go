package blob

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/docker2vm/docker2vm/hint"
)

// ErrDigestMismatch is matched (errors.Is) by every integrity failure: a
// manifest, config or layer whose bytes do not hash to their digest, or
// whose size differs from the one its descriptor states.
var ErrDigestMismatch = errors.New("digest mismatch")

// ErrNetwork is matched (errors.Is) by every registry transfer that failed
// for good after its retries: dropped or reset connections, stalls, server
// errors, rate limits.
var ErrNetwork = errors.New("registry transfer failed")

// corruptHints are the fixes for a corrupt blob. The blob cache is never
// the cause (an entry is verified before it is served; a bad one is
// replaced), so they do not mention it.
var corruptHints = []string{
	"The image source is corrupt or was tampered with: fetch, export or build the image again.",
}

// IntegrityError reports a blob whose content does not match its
// descriptor.
type IntegrityError struct {
	What string // "layer 2 sha256:…", "manifest sha256:…", "config sha256:…"
	Msg  string // "got sha256:…" or "size 12 bytes, expected 13"
}

func (e *IntegrityError) Error() string {
	return fmt.Sprintf("%s: digest mismatch: %s; the image source is corrupt or was tampered with", e.What, e.Msg)
}
func (e *IntegrityError) Is(target error) bool { return target == ErrDigestMismatch }
func (e *IntegrityError) Hints() []string      { return corruptHints }

// HashOf returns the sha256 digest h has summed.
func HashOf(h hash.Hash) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
}

// Sha256Of returns the sha256 digest of b.
func Sha256Of(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

// CheckAlgorithm refuses digests other than sha256.
func CheckAlgorithm(d v1.Hash, what string) error {
	if d.Algorithm != "sha256" {
		return hint.New(nil, []string{"Only sha256 digests are supported."}, "%s: unsupported digest algorithm %q", what, d.Algorithm)
	}
	return nil
}

// Verifier passes r through, hashing it; it fails when more than size bytes
// arrive, and at EOF when fewer did or the hash differs from want. A
// negative size is not checked.
type Verifier struct {
	r    io.Reader
	h    hash.Hash
	want v1.Hash
	size int64
	n    int64
	what string
	err  error // sticky result once EOF was seen
	done bool
	// stored: r reads the blob as stored (a file, the network), so its
	// errors are failures to read it (ReadError), not decompression
	// errors.
	stored bool
}

// NewVerifier checks r against want and size (see Verifier). Stored says
// r reads the blob as stored, so that its errors are ReadErrors.
func NewVerifier(r io.Reader, want v1.Hash, size int64, what string, stored bool) (*Verifier, error) {
	if err := CheckAlgorithm(want, what); err != nil {
		return nil, err
	}
	return &Verifier{r: r, h: sha256.New(), want: want, size: size, what: what, stored: stored}, nil
}

// What names the blob, Want is its digest, and Done says the stream was
// read to its end (and checked).
func (v *Verifier) What() string  { return v.what }
func (v *Verifier) Want() v1.Hash { return v.want }
func (v *Verifier) Done() bool    { return v.done }

func (v *Verifier) Read(p []byte) (int, error) {
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
		v.err = &IntegrityError{What: v.what, Msg: fmt.Sprintf("more than the %d bytes its descriptor states", v.size)}
		return n, v.err
	}
	if err == io.EOF {
		v.done = true
		v.err = v.check()
		if v.err != nil {
			return n, v.err
		}
	} else if err != nil && !IsReadError(err) {
		if v.stored {
			err = &ReadError{what: v.what, err: err}
		} else {
			err = fmt.Errorf("reading %s: %w", v.what, err)
		}
	}
	return n, err
}

// ReadError is a failure to read the stored bytes (the network, a disk):
// it says nothing about whether they are right.
type ReadError struct {
	what string
	err  error
}

func (e *ReadError) Error() string {
	var ie *IntegrityError
	if errors.Is(e.err, ErrNetwork) || errors.Is(e.err, context.Canceled) || errors.Is(e.err, context.DeadlineExceeded) || errors.As(e.err, &ie) {
		return e.err.Error() // names the blob already, or needs no more words
	}
	return "reading " + e.what + ": " + e.err.Error()
}
func (e *ReadError) Unwrap() error { return e.err }

// IsReadError reports whether err is (or wraps) a failure to read stored
// bytes.
func IsReadError(err error) bool {
	var re *ReadError
	return errors.As(err, &re)
}

func (v *Verifier) check() error {
	if v.size >= 0 && v.n != v.size {
		return &IntegrityError{What: v.what, Msg: fmt.Sprintf("%d bytes, expected %d", v.n, v.size)}
	}
	if got := HashOf(v.h); got != v.want {
		return &IntegrityError{What: v.what, Msg: "got " + got.String()}
	}
	return nil
}

// ReadVerified reads a whole small blob (at most limit bytes) and checks it.
func ReadVerified(r io.Reader, desc v1.Descriptor, limit int64, what string) ([]byte, error) {
	if desc.Size > limit {
		return nil, hint.New(nil, nil, "%s is %d bytes, more than the %d allowed", what, desc.Size, limit)
	}
	size := desc.Size
	if size <= 0 {
		size = -1
	}
	v, err := NewVerifier(io.LimitReader(r, limit+1), desc.Digest, size, what, true)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(v)
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, hint.New(nil, nil, "%s is more than the %d bytes allowed", what, limit)
	}
	return b, nil
}
