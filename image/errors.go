package image

import (
	"errors"
	"fmt"

	"github.com/docker2vm/docker2vm/hint"
)

// HintError is implemented by errors that carry fixes for the user.
type HintError interface {
	error
	Hints() []string
}

func newError(err error, hints []string, format string, args ...any) *hint.Error {
	return hint.New(err, hints, format, args...)
}

// ErrDigestMismatch is matched (errors.Is) by every integrity failure: a
// manifest, config or layer whose bytes do not hash to their digest, or
// whose size differs from the one its descriptor states.
var ErrDigestMismatch = errors.New("digest mismatch")

// corruptHints are the fixes for a corrupt blob. The blob cache is never
// the cause (an entry is verified before it is served; a bad one is
// replaced), so they do not mention it.
var corruptHints = []string{
	"The image source is corrupt or was tampered with: fetch, export or build the image again.",
}

// integrityError reports a blob whose content does not match its descriptor.
type integrityError struct {
	what string // "layer 2 sha256:…", "manifest sha256:…", "config sha256:…"
	msg  string // "got sha256:…" or "size 12 bytes, expected 13"
}

func (e *integrityError) Error() string {
	return fmt.Sprintf("%s: digest mismatch: %s; the image source is corrupt or was tampered with", e.what, e.msg)
}
func (e *integrityError) Is(target error) bool { return target == ErrDigestMismatch }
func (e *integrityError) Hints() []string      { return corruptHints }
