package testenv

import (
	"errors"
	"strings"
	"testing"
)

func TestParseQemuVersion(t *testing.T) {
	tests := []struct {
		out  string
		want qemuVersion
		ok   bool
	}{
		{"qemu-aarch64 version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard\n", qemuVersion{7, 2}, true},
		{"qemu-aarch64 version 11.1.3 (Debian 1:11.1.3+ds-1)\n", qemuVersion{11, 1}, true},
		{"qemu-x86_64 version 8.0.0\n", qemuVersion{8, 0}, true},
		{"", qemuVersion{}, false},
		{"usage: qemu-aarch64 [options] program [arguments...]\n", qemuVersion{}, false},
		{"qemu-aarch64 version 99999999999999999999.1\n", qemuVersion{}, false},
	}
	for _, tt := range tests {
		got, ok := parseQemuVersion(tt.out)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseQemuVersion(%q) = %v, %v; want %v, %v", tt.out, got, ok, tt.want, tt.ok)
		}
	}
}

func TestChooseQemuUser(t *testing.T) {
	arm64 := arches[ARM64]
	old := qemuCandidate{path: "/usr/bin/qemu-aarch64-static", version: "qemu-aarch64 version 7.2.22 (Debian)\n"}
	recent := qemuCandidate{path: "/usr/local/bin/qemu-aarch64", version: "qemu-aarch64 version 11.1.3 (Debian)\n"}
	broken := qemuCandidate{path: "/usr/bin/qemu-aarch64", err: errors.New("exec format error")}
	tests := []struct {
		name    string
		found   []qemuCandidate
		want    string
		wantErr []string // all in the error
	}{
		{"recent one first", []qemuCandidate{recent, old}, recent.path, nil},
		{"old one skipped", []qemuCandidate{old, recent}, recent.path, nil},
		{"broken one skipped", []qemuCandidate{broken, recent}, recent.path, nil},
		{"only an old one", []qemuCandidate{old}, "", []string{"no qemu-user 8.0 or newer", "/usr/bin/qemu-aarch64-static is qemu 7.2", "install-deps.sh", "/usr/local/bin/qemu-aarch64"}},
		{"none", nil, "", []string{"no qemu-user to run arm64 programs", "qemu-aarch64 or qemu-aarch64-static", "install-deps.sh"}},
		{"no version", []qemuCandidate{{path: "/x/qemu-aarch64", version: "hello\n"}}, "", []string{`/x/qemu-aarch64 does not say its version ("hello")`}},
		{"broken only", []qemuCandidate{broken}, "", []string{"/usr/bin/qemu-aarch64 does not run (exec format error)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := chooseQemuUser(arm64, tt.found)
			if got != tt.want {
				t.Errorf("chose %q, want %q", got, tt.want)
			}
			if (err != nil) != (tt.wantErr != nil) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
