//go:build !unix

package diskio

import "os"

// openNoFollow: without O_NOFOLLOW and O_NONBLOCK, OpenRegular relies on
// its lstat and fstat checks.
func openNoFollow(path string, flag int) (*os.File, error) { return os.OpenFile(path, flag, 0) }
