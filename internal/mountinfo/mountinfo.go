// Package mountinfo reads /proc/self/mountinfo (proc(5)): the one parser
// for the guest program that covers Gondolin's tmpfs directories
// (gondolin/guestenv) and the test fixtures that clean up mounts.
package mountinfo

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Mount is one line of mountinfo, the fields docker2vm uses.
type Mount struct {
	ID, Parent int
	Point      string // the mount point, unescaped
	FSType     string
}

// Parse reads mountinfo. Lines that do not parse are errors: the kernel
// writes nothing else.
func Parse(r io.Reader) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 5 || sep < 0 || sep+1 >= len(f) {
			return nil, fmt.Errorf("mountinfo line %d: %q: malformed", n, sc.Text())
		}
		id, err1 := strconv.Atoi(f[0])
		parent, err2 := strconv.Atoi(f[1])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("mountinfo line %d: %q: malformed mount id", n, sc.Text())
		}
		out = append(out, Mount{ID: id, Parent: parent, Point: Unescape(f[4]), FSType: f[sep+1]})
	}
	return out, sc.Err()
}

// Read parses this process's /proc/self/mountinfo.
func Read() ([]Mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f)
}

// Unescape undoes the kernel's \ooo escapes (space, tab, newline,
// backslash) in mountinfo paths.
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1:i+4]) {
			v, _ := strconv.ParseUint(s[i+1:i+4], 8, 8)
			b.WriteByte(byte(v))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(s string) bool {
	if len(s) != 3 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '7' {
			return false
		}
	}
	return s[0] <= '3'
}

// Under returns the mount points at or below dir, deepest first.
func Under(mounts []Mount, dir string) []string {
	var out []string
	for _, m := range mounts {
		if m.Point == dir || strings.HasPrefix(m.Point, strings.TrimSuffix(dir, "/")+"/") {
			out = append(out, m.Point)
		}
	}
	// Deepest first: a mount below another is unmounted before it.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && len(out[j]) > len(out[j-1]); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}
