//go:build (linux || darwin) && !docker2vm_portable

package diskio

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// nextData is SEEK_DATA/SEEK_HOLE (Linux; APFS and HFS+ on macOS). A
// filesystem that does not support them fails with EINVAL or ENOTSUP.
func nextData(f *os.File, off int64) (data, hole int64, err error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		data, serr = unix.Seek(int(fd), off, unix.SEEK_DATA)
		if serr != nil {
			return
		}
		hole, serr = unix.Seek(int(fd), data, unix.SEEK_HOLE)
	}); err != nil {
		return 0, 0, err
	}
	switch {
	case errors.Is(serr, unix.ENXIO):
		return 1<<63 - 1, 1<<63 - 1, nil // no data at or after off
	case errors.Is(serr, unix.EINVAL), errors.Is(serr, unix.ENOTSUP), errors.Is(serr, unix.EOPNOTSUPP):
		return 0, 0, ErrUnsupported
	case serr != nil:
		return 0, 0, fmt.Errorf("SEEK_DATA/SEEK_HOLE %s: %w", f.Name(), serr)
	}
	return data, hole, nil
}

func allocated(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}
