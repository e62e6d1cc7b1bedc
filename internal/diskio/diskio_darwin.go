//go:build darwin && !docker2vm_portable

package diskio

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

const impl = "darwin"

func identify(fi os.FileInfo) (FileID, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return FileID{}, false
	}
	return FileID{Dev: uint64(st.Dev), Ino: st.Ino, Nlink: uint64(st.Nlink), Size: st.Size,
		MtimeNs: st.Mtimespec.Nano(), CtimeNs: st.Ctimespec.Nano()}, true
}

// startWriteback: macOS has no call that starts writeback without waiting
// for it (F_FULLFSYNC waits); the final fsync does it all.
func startWriteback(*os.File, int64, int64) {}

// openNoCache opens the file again by name and turns its caching off.
// F_NOCACHE has no alignment rule, but callers keep to DirectAlign anyway.
func openNoCache(f *os.File) (*os.File, error) {
	d, err := os.OpenFile(f.Name(), os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	if _, err := unix.FcntlInt(d.Fd(), unix.F_NOCACHE, 1); err != nil {
		d.Close()
		return nil, ErrUnsupported
	}
	return d, nil
}

func noCacheRefused(err error) bool { return errors.Is(err, unix.EINVAL) }

// clone uses clonefile(2) through the open source file: instant on APFS.
func clone(src *os.File, dst string) error {
	err := unix.Fclonefileat(int(src.Fd()), unix.AT_FDCWD, dst, unix.CLONE_NOFOLLOW)
	if err == nil {
		return nil
	}
	if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) {
		return ErrUnsupported
	}
	return err
}

func exchange(a, b string) error {
	err := unix.RenamexNp(a, b, unix.RENAME_SWAP)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTSUP) {
		return ErrUnsupported
	}
	if err != nil {
		return &os.LinkError{Op: "exchange", Old: a, New: b, Err: err}
	}
	return nil
}
