package testenv

import "testing"

// TestArch checks the architecture names the fixtures accept.
func TestArch(t *testing.T) {
	for in, want := range map[string]string{"amd64": AMD64, "x86_64": AMD64, "linux/amd64": AMD64, "arm64": ARM64,
		"aarch64": ARM64, "linux/arm64/v8": ARM64, "AArch64": ARM64, "riscv64": "", "linux/": "", "": ""} {
		got := ""
		if a := LookupArch(in); a != nil {
			got = a.Name
		}
		if got != want {
			t.Errorf("LookupArch(%q) = %q, want %q", in, got, want)
		}
	}
	for want, hdr := range map[string][]byte{
		AMD64: {0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0x3e, 0},
		ARM64: {0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0xb7, 0},
		"":    {0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0xf3, 0},
	} {
		if got := ArchOfELF(hdr); got != want {
			t.Errorf("ArchOfELF(machine %#x) = %q, want %q", hdr[18], got, want)
		}
	}
	if ArchOfELF([]byte("#!/bin/sh\n")) != "" {
		t.Error("ArchOfELF of a script")
	}
}
