package rootfs

import (
	"errors"
	"fmt"

	"github.com/docker2vm/docker2vm/internal/confine"
	"github.com/docker2vm/docker2vm/internal/units"
)

// Limits bound what a (possibly hostile) image may make the merge do. A zero
// field takes its value from DefaultLimits.
type Limits struct {
	// MaxBytes bounds the total uncompressed bytes over all layers: file data
	// (logical sizes, holes included) plus xattr names and values and symlink
	// targets.
	MaxBytes int64
	// MaxEntries bounds the number of tar entries over all layers plus the
	// parent directories the merge had to create for them.
	MaxEntries int
	// MaxPathLen bounds the length of entry names and link targets in bytes.
	MaxPathLen int
}

// DefaultLimits returns generous limits: no real image gets near them.
func DefaultLimits() Limits {
	return Limits{
		MaxBytes:   64 << 30,
		MaxEntries: 10_000_000,
		MaxPathLen: 4096,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxBytes <= 0 {
		l.MaxBytes = d.MaxBytes
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = d.MaxEntries
	}
	if l.MaxPathLen <= 0 {
		l.MaxPathLen = d.MaxPathLen
	}
	return l
}

// ErrLimit is wrapped by every error about an exceeded limit.
var ErrLimit = errors.New("limit exceeded")

// ErrMalformed is wrapped by every error about an entry that no well-formed
// image contains.
var ErrMalformed = errors.New("the image is malformed or hostile")

// LimitError reports an exceeded limit and the flag that raises it.
type LimitError struct {
	What  string // "total uncompressed size", "number of entries", "path length"
	Limit int64
	Flag  string // "--max-bytes", "--max-entries", "--max-path"
}

func (e *LimitError) Error() string {
	v := fmt.Sprint(e.Limit)
	if e.Flag == "--max-bytes" {
		v = fmt.Sprintf("%d bytes (%s)", e.Limit, units.Bytes(e.Limit))
	}
	hint := ""
	if e.Flag == "--max-bytes" {
		hint = "; an image that expands this much may be a decompression bomb"
	}
	return fmt.Sprintf("%s exceeds the limit of %s (raise it with %s if the image is trusted%s)", e.What, v, e.Flag, hint)
}

func (e *LimitError) Unwrap() error { return ErrLimit }

// malformedError says what is wrong with an entry; it wraps ErrMalformed.
type malformedError struct{ msg string }

func (e *malformedError) Error() string { return e.msg + ": " + ErrMalformed.Error() }
func (e *malformedError) Unwrap() error { return ErrMalformed }

// shown quotes a name from the image for a message, cut to 256 bytes: a
// hostile name can be megabytes long.
var shown = confine.Quote

func malformed(format string, args ...any) error {
	return &malformedError{msg: fmt.Sprintf(format, args...)}
}
