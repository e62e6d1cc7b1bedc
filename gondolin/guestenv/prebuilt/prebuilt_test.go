package prebuilt_test

import (
	"bytes"
	"debug/elf"
	"testing"

	"github.com/docker2vm/docker2vm/gondolin/guestenv/prebuilt"
	"github.com/docker2vm/docker2vm/gondolin/guestenv/prebuilt/source"
)

// TestBinariesCurrent: each committed binary is a static Linux executable
// for its architecture, built from the sources as they are now (run `go
// generate ./gondolin/guestenv/prebuilt` after changing them).
func TestBinariesCurrent(t *testing.T) {
	root, err := source.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	sum, err := source.Hash(root)
	if err != nil {
		t.Fatal(err)
	}
	machines := map[string]elf.Machine{"x86_64": elf.EM_X86_64, "aarch64": elf.EM_AARCH64}
	for _, arch := range prebuilt.Arches {
		bin, err := prebuilt.Binary(arch)
		if err != nil {
			t.Fatal(err)
		}
		f, err := elf.NewFile(bytes.NewReader(bin))
		if err != nil {
			t.Fatalf("%s: %v", arch, err)
		}
		if f.Machine != machines[arch] || f.Type != elf.ET_EXEC {
			t.Errorf("%s: machine %v, type %v", arch, f.Machine, f.Type)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
				t.Errorf("%s: not static (%v)", arch, p.Type)
			}
		}
		if !bytes.Contains(bin, []byte(sum)) {
			t.Errorf("%s: built from other sources than these: run go generate ./gondolin/guestenv/prebuilt", arch)
		}
	}
	if _, err := prebuilt.Binary("riscv64"); err == nil {
		t.Error("an unknown architecture has a binary")
	}
}
