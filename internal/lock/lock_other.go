//go:build !unix

package lock

import "os"

// tryLock: without flock, locks are not enforced (docker2vm supports Linux
// and macOS; this keeps the package building elsewhere).
func tryLock(*os.File) (bool, error) { return true, nil }

func tryShared(*os.File) (bool, error) { return true, nil }
