//go:build unix

package diskio

import (
	"errors"
	"os"
	"syscall"
)

// openNoFollow opens without following a final symbolic link and without
// blocking on a FIFO.
func openNoFollow(path string, flag int) (*os.File, error) {
	f, err := os.OpenFile(path, flag|syscall.O_NONBLOCK|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) && pe.Err == syscall.ELOOP {
			return nil, &NotRegularError{Path: path, Kind: "symbolic link"}
		}
		return nil, err
	}
	return f, nil
}
