//go:build !linux

package guestenv

import (
	"fmt"
	"os"
)

// Main reports that the program runs in a Linux guest only: docker2vm
// builds it for Linux, and other hosts compile the package for its
// portable parts.
func Main() int {
	fmt.Fprintln(os.Stderr, Name+": runs in a Linux guest only")
	return 1
}
