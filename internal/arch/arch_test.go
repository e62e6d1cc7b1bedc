package arch

import "testing"

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Arch
		ok   bool
	}{
		{"amd64", AMD64, true}, {"x86_64", AMD64, true}, {"X86-64", AMD64, true}, {" x64 ", AMD64, true},
		{"arm64", ARM64, true}, {"AArch64", ARM64, true},
		{"arm", Arch{}, false}, {"riscv64", Arch{}, false}, {"", Arch{}, false}, {"linux/amd64", Arch{}, false},
	} {
		if got, ok := Parse(tc.in); got != tc.want || ok != tc.ok {
			t.Errorf("Parse(%q) = %+v, %v; want %+v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestPick(t *testing.T) {
	for name, want := range map[string]string{"x86_64": "a", "amd64": "a", "aarch64": "b", "ARM64": "b"} {
		if got, ok := Pick(name, "a", "b"); !ok || got != want {
			t.Errorf("Pick(%q) = %q, %v", name, got, ok)
		}
	}
	if got, ok := Pick("riscv64", "a", "b"); ok || got != "" {
		t.Errorf("Pick(riscv64) = %q, %v", got, ok)
	}
}
