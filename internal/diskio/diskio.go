// Package diskio holds the file operations whose system calls differ
// between the hosts docker2vm runs on (Linux, macOS), each with a portable
// fallback that gives the same results, only slower or with more page
// cache. Everything here is a hint or a shortcut: callers never depend on
// it for correctness, and the bytes they write are the same whichever
// implementation runs.
//
// The implementation is chosen at build time: diskio_linux.go,
// diskio_darwin.go, or diskio_portable.go on other systems. Building with
// the tag docker2vm_portable forces the portable one on every system, so
// that its paths are tested on Linux too.
package diskio

import (
	"errors"
	"io"
	"os"
)

// ErrUnsupported is returned by operations the system or the filesystem
// cannot do; callers then take their ordinary path.
var ErrUnsupported = errors.ErrUnsupported

// FileID is what identifies a file's contents without reading them: a
// write, a truncate, a chmod or a new link changes it.
type FileID struct {
	Dev     uint64 `json:"dev"`
	Ino     uint64 `json:"ino"`
	Nlink   uint64 `json:"-"`
	Size    int64  `json:"size"`
	MtimeNs int64  `json:"mtimeNs"`
	CtimeNs int64  `json:"ctimeNs"`
}

// Identify returns fi's identity; ok is false where the system does not
// expose one (then callers must not trust that a file is unchanged).
func Identify(fi os.FileInfo) (id FileID, ok bool) { return identify(fi) }

// SameDevice reports whether two files are on one filesystem; where that
// cannot be told (the portable fallback), it says they are.
func SameDevice(a, b os.FileInfo) bool {
	x, ok1 := identify(a)
	y, ok2 := identify(b)
	return !ok1 || !ok2 || x.Dev == y.Dev
}

// NextData returns the first data region of f at or after off, below
// size: [data, hole). It returns io.EOF when there is no more data. Where
// holes cannot be found (the portable fallback, or a filesystem without
// SEEK_DATA), the rest of the file is one data region: the caller reads
// zeros instead of skipping them, with the same result.
func NextData(f *os.File, off, size int64) (data, hole int64, err error) {
	if off >= size {
		return 0, 0, io.EOF
	}
	data, hole, err = nextData(f, off)
	if errors.Is(err, ErrUnsupported) {
		return off, size, nil
	}
	if err != nil {
		return 0, 0, err
	}
	if data >= size {
		return 0, 0, io.EOF
	}
	return data, min(hole, size), nil
}

// StartWriteback asks the system to start writing [off, off+n) of f to
// disk without waiting for it, so that a later fsync has less to wait for.
// Best effort, and a no-op where there is no such call.
func StartWriteback(f *os.File, off, n int64) { startWriteback(f, off, n) }

// OpenNoCache opens f's file again for writes that bypass the page cache
// (O_DIRECT on Linux, F_NOCACHE on macOS). Writes through it must be
// aligned to DirectAlign in memory, offset and length; a write that the
// filesystem refuses fails with an error for which NoCacheRefused is true,
// and the caller then writes through f instead. ErrUnsupported where
// there is no such mode.
func OpenNoCache(f *os.File) (*os.File, error) { return openNoCache(f) }

// NoCacheRefused reports whether err is a filesystem refusing a write
// through an OpenNoCache file (not an I/O error).
func NoCacheRefused(err error) bool { return noCacheRefused(err) }

// DirectAlign is the alignment OpenNoCache writes need.
const DirectAlign = 4096

// Clone makes dst, which must not exist, a copy-on-write clone of src:
// FICLONE on Linux (btrfs, XFS), clonefile on macOS (APFS). The clone
// costs no data I/O. ErrUnsupported (or the system's error) when the
// filesystem cannot; then dst does not exist.
func Clone(src *os.File, dst string) error { return clone(src, dst) }

// Exchange swaps the directory entries a and b, both existing, on one
// filesystem, in one atomic step (renameat2 RENAME_EXCHANGE on Linux,
// renamex_np RENAME_SWAP on macOS): there is no moment when either name is
// missing. ErrUnsupported where the system or filesystem cannot.
func Exchange(a, b string) error { return exchange(a, b) }

// Impl names the implementation compiled in: "linux", "darwin" or
// "portable".
const Impl = impl

// Allocated returns the bytes fi's file takes on disk (less than its size
// when it is sparse); its size where the system does not tell.
func Allocated(fi os.FileInfo) int64 { return allocated(fi) }
