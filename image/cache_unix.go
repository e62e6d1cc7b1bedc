//go:build unix

package image

import (
	"fmt"
	"os"
	"syscall"
)

// openRegular opens path (flag: os.O_RDONLY or os.O_RDWR) only if it is a
// regular file, else fails with a *notRegularError. It does not follow a
// symbolic link, and opening never blocks: a FIFO or a device is refused by
// lstat first and, should one be swapped in after that, by fstat after a
// non-blocking open, before any read.
func openRegular(path string, flag int) (*os.File, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, &notRegularError{path: path, kind: fileKind(fi.Mode())}
	}
	f, err := os.OpenFile(path, flag|syscall.O_NONBLOCK|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		if pe, ok := err.(*os.PathError); ok && pe.Err == syscall.ELOOP {
			return nil, &notRegularError{path: path, kind: "symbolic link"}
		}
		return nil, err
	}
	fi, err = f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, &notRegularError{path: path, kind: fileKind(fi.Mode())}
	}
	return f, nil
}
