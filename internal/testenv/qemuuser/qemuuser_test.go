package qemuuser

import (
	"errors"
	"strings"
	"testing"

	"github.com/docker2vm/docker2vm/internal/testenv"
)

func TestParseVersion(t *testing.T) {
	tests := []struct {
		out  string
		want version
		ok   bool
	}{
		{"qemu-aarch64 version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard\n", version{7, 2}, true},
		{"qemu-aarch64 version 11.1.3 (Debian 1:11.1.3+ds-1)\n", version{11, 1}, true},
		{"qemu-x86_64 version 8.0.0\n", version{8, 0}, true},
		{"", version{}, false},
		{"usage: qemu-aarch64 [options] program [arguments...]\n", version{}, false},
		{"qemu-aarch64 version 99999999999999999999.1\n", version{}, false},
	}
	for _, tt := range tests {
		got, ok := parseVersion(tt.out)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseVersion(%q) = %v, %v; want %v, %v", tt.out, got, ok, tt.want, tt.ok)
		}
	}
}

func TestChoose(t *testing.T) {
	arm64 := testenv.LookupArch(testenv.ARM64)
	old := candidate{path: "/usr/bin/qemu-aarch64-static", version: "qemu-aarch64 version 7.2.22 (Debian)\n"}
	recent := candidate{path: "/usr/local/bin/qemu-aarch64", version: "qemu-aarch64 version 11.1.3 (Debian)\n"}
	broken := candidate{path: "/usr/bin/qemu-aarch64", err: errors.New("exec format error")}
	tests := []struct {
		name    string
		found   []candidate
		want    string
		wantErr []string // all in the error
	}{
		{"recent one first", []candidate{recent, old}, recent.path, nil},
		{"old one skipped", []candidate{old, recent}, recent.path, nil},
		{"broken one skipped", []candidate{broken, recent}, recent.path, nil},
		{"only an old one", []candidate{old}, "", []string{"no qemu-user 8.0 or newer", "/usr/bin/qemu-aarch64-static is qemu 7.2", "install-deps.sh", "/usr/local/bin/qemu-aarch64"}},
		{"none", nil, "", []string{"no qemu-user to run arm64 programs", "qemu-aarch64 or qemu-aarch64-static", "install-deps.sh"}},
		{"no version", []candidate{{path: "/x/qemu-aarch64", version: "hello\n"}}, "", []string{`/x/qemu-aarch64 does not say its version ("hello")`}},
		{"broken only", []candidate{broken}, "", []string{"/usr/bin/qemu-aarch64 does not run (exec format error)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := choose(arm64, tt.found)
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
