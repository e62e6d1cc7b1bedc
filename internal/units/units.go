// Package units formats quantities for people: progress lines and error
// messages.
package units

import "fmt"

// Bytes formats n with a binary prefix and one decimal ("1.5 GiB"); below
// 1 KiB it is an exact count ("512 B").
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
