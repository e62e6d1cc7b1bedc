package diskio

import (
	"fmt"
	"io"
	"io/fs"
	"os"
)

// NotRegularError says that a path docker2vm expected a regular file at
// holds something else (a FIFO, a socket, a device, a directory, a
// symbolic link).
type NotRegularError struct {
	Path string
	Kind string // "FIFO", "directory"...
}

func (e *NotRegularError) Error() string { return e.Path + " is a " + e.Kind + ", not a regular file" }

// Kind names a file's type for messages.
func Kind(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "regular file"
	case m&fs.ModeNamedPipe != 0:
		return "FIFO"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	case m.IsDir():
		return "directory"
	}
	return "special file"
}

// OpenRegular opens path (flag: os.O_RDONLY or os.O_RDWR) only if it is a
// regular file, else fails with a *NotRegularError. It does not follow a
// symbolic link, and opening never blocks: a FIFO or a device is refused by
// lstat first and, should one be swapped in after that, by fstat after a
// non-blocking open (where the platform has one), before any read. Every
// file docker2vm opens in a directory it does not fully control (a cache,
// Gondolin's image store, a publish directory, a base bundle) is opened so.
func OpenRegular(path string, flag int) (*os.File, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, &NotRegularError{Path: path, Kind: Kind(fi.Mode())}
	}
	f, err := openNoFollow(path, flag)
	if err != nil {
		return nil, err
	}
	fi, err = f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, &NotRegularError{Path: path, Kind: Kind(fi.Mode())}
	}
	return f, nil
}

// ReadRegular reads a whole file that must be a regular file
// (OpenRegular), at most max bytes (max <= 0: no limit).
func ReadRegular(path string, max int64) ([]byte, error) {
	f, err := OpenRegular(path, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	if max > 0 {
		r = io.LimitReader(f, max+1)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if max > 0 && int64(len(data)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return data, nil
}
