//go:build !unix

package image

import "os"

// openRegular opens path only if it is a regular file (see cache_unix.go;
// here the check is lstat alone).
func openRegular(path string, flag int) (*os.File, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, &notRegularError{path: path, kind: fileKind(fi.Mode())}
	}
	return os.OpenFile(path, flag, 0)
}
