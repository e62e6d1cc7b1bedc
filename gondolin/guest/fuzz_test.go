package guest

import (
	"bytes"
	"testing"
)

// FuzzELFDeps feeds arbitrary bytes to the ELF reader that finds what a
// base binary needs (its interpreter and libraries): no panic, no
// unbounded result.
func FuzzELFDeps(f *testing.F) {
	f.Add(fakeELF("/lib/ld-musl-x86_64.so.1", "libc.musl-x86_64.so.1"))
	f.Add([]byte("\x7fELF"))
	f.Add(bytes.Repeat([]byte{0}, 64))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, needed, err := elfDeps(data)
		if err == nil && len(needed) > len(data) {
			t.Fatalf("%d libraries from %d bytes", len(needed), len(data))
		}
	})
}
