package require

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// recorder is a TB that records what the gate decided instead of stopping
// the test, so the gate is tested in this process (no test binary started
// again, which would need binfmt_misc under qemu-user).
type recorder struct {
	skipped, failed []string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = append(r.failed, fmt.Sprintf(format, args...))
}

func (r *recorder) Skipf(format string, args ...any) {
	r.skipped = append(r.skipped, fmt.Sprintf(format, args...))
}

// verdict is "skip", "fail", "run" or, for a broken gate, "both".
func (r *recorder) verdict() string {
	switch {
	case len(r.failed) > 0 && len(r.skipped) > 0:
		return "both"
	case len(r.failed) > 0:
		return "fail"
	case len(r.skipped) > 0:
		return "skip"
	}
	return "run"
}

func TestCI(t *testing.T) {
	for v, want := range map[string]bool{"true": true, "1": true, "": false, "false": false, "0": false, "yes": false, "TRUE": false} {
		t.Setenv("CI", v)
		if got := CI(); got != want {
			t.Errorf("CI=%q: CI() = %v, want %v", v, got, want)
		}
	}
}

// TestMissing: a missing prerequisite skips, except under CI=true or
// CI=1, where it fails; the message says what is missing.
func TestMissing(t *testing.T) {
	for v, want := range map[string]string{"": "skip", "false": "skip", "true": "fail", "1": "fail"} {
		t.Setenv("CI", v)
		r := &recorder{}
		Missing(r, "the %s tool", "frobnicate")
		if got := r.verdict(); got != want {
			t.Errorf("CI=%q: %s, want %s (%+v)", v, got, want, r)
		}
		if msg := strings.Join(append(r.skipped, r.failed...), ""); !strings.Contains(msg, "the frobnicate tool") {
			t.Errorf("CI=%q: message %q does not say what is missing", v, msg)
		}
	}
}

// fakeTools makes a directory holding an executable "present-tool" and a
// non-executable "plain-file", and makes it the whole PATH.
func fakeTools(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "present-tool"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "plain-file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	return dir
}

func TestTool(t *testing.T) {
	dir := fakeTools(t)
	const absent = "docker2vm-no-such-tool"
	for _, ci := range []string{"", "true", "1"} {
		t.Setenv("CI", ci)
		r := &recorder{}
		if p := Tool(r, "present-tool"); p != filepath.Join(dir, "present-tool") || r.verdict() != "run" {
			t.Errorf("CI=%q: present tool: %q, %+v", ci, p, r)
		}
		if p := Tool(r, filepath.Join(dir, "present-tool")); p != filepath.Join(dir, "present-tool") || r.verdict() != "run" {
			t.Errorf("CI=%q: present tool by absolute path: %q, %+v", ci, p, r)
		}
		want := "skip"
		if ci != "" {
			want = "fail"
		}
		for _, name := range []string{absent, "plain-file", filepath.Join(dir, absent)} {
			r := &recorder{}
			if p := Tool(r, name); p != "" || r.verdict() != want {
				t.Errorf("CI=%q: Tool(%q) = %q, %s, want %s", ci, name, p, r.verdict(), want)
			}
			if msg := strings.Join(append(r.skipped, r.failed...), ""); !strings.Contains(msg, name) || !strings.Contains(msg, "make deps") {
				t.Errorf("CI=%q: message %q lacks the tool's name or how to install it", ci, msg)
			}
		}
	}
}

func TestTools(t *testing.T) {
	dir := fakeTools(t)
	t.Setenv("CI", "")
	r := &recorder{}
	if got := Tools(r, "pkg", "present-tool"); got["present-tool"] != filepath.Join(dir, "present-tool") || r.verdict() != "run" {
		t.Errorf("present: %v, %+v", got, r)
	}
	r = &recorder{}
	if got := Tools(r, "pkg-a pkg-b", "present-tool", "no-such-one", "no-such-two"); got != nil || r.verdict() != "skip" {
		t.Errorf("missing: %v, %+v", got, r)
	}
	if msg := strings.Join(r.skipped, ""); !strings.Contains(msg, "no-such-one, no-such-two") || !strings.Contains(msg, "apt-get install pkg-a pkg-b") {
		t.Errorf("message %q lacks the missing tools or the packages", msg)
	}
	t.Setenv("CI", "true")
	r = &recorder{}
	if Tools(r, "", "no-such-one"); r.verdict() != "fail" {
		t.Errorf("CI=true: %+v", r)
	}
}

// TestLookSbin: a tool outside PATH in the sbin directories (mke2fs, as a
// user whose PATH lacks /usr/sbin) is found; "go" is found in the running
// toolchain.
func TestLookSbin(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	found := ""
	for _, dir := range sbinDirs {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if st, err := os.Stat(filepath.Join(dir, e.Name())); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
				found = filepath.Join(dir, e.Name())
				break
			}
		}
		if found != "" {
			break
		}
	}
	if found == "" {
		t.Log("no program in the sbin directories to look for")
	} else if p, ok := Look(filepath.Base(found)); !ok || filepath.Base(p) != filepath.Base(found) {
		t.Errorf("Look(%q) = %q, %v; want a path to it", filepath.Base(found), p, ok)
	}
	if _, ok := Look("go"); !ok {
		t.Error("Look(go) does not find the toolchain running the tests")
	}
	if _, ok := Look(""); ok {
		t.Error("Look of an empty name succeeded")
	}
}

func TestRoot(t *testing.T) {
	for _, ci := range []string{"", "true"} {
		t.Setenv("CI", ci)
		r := &recorder{}
		Root(r, "to test the gate")
		want := "run"
		if os.Geteuid() != 0 {
			want = "skip"
			if ci != "" {
				want = "fail"
			}
		}
		if got := r.verdict(); got != want {
			t.Errorf("CI=%q, euid %d: %s, want %s", ci, os.Geteuid(), got, want)
		}
		if msg := strings.Join(append(r.skipped, r.failed...), ""); want != "run" && !strings.Contains(msg, "needs root to test the gate") {
			t.Errorf("message: %+v", r)
		}
	}
}

// TestIntegration: -short skips an integration test, with or without CI
// (-short is how the unit tests are chosen, not a missing prerequisite);
// without -short it runs.
func TestIntegration(t *testing.T) {
	short := flag.Lookup("test.short")
	old := short.Value.String()
	t.Cleanup(func() { short.Value.Set(old) })
	for _, tc := range []struct {
		short, ci string
		want      string
	}{
		{"true", "", "skip"}, {"true", "true", "skip"}, {"false", "", "run"}, {"false", "1", "run"},
	} {
		if err := short.Value.Set(tc.short); err != nil {
			t.Fatal(err)
		}
		t.Setenv("CI", tc.ci)
		r := &recorder{}
		Integration(r, "boots nothing")
		if got := r.verdict(); got != tc.want || Integrating() != (tc.want == "run") {
			t.Errorf("-short=%s CI=%q: %s (Integrating %v), want %s", tc.short, tc.ci, got, Integrating(), tc.want)
		}
		if tc.want == "skip" && !strings.Contains(r.skipped[0], "boots nothing") {
			t.Errorf("skip message %q does not say what the test does", r.skipped[0])
		}
	}
}
