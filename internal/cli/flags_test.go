package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/docker2vm/docker2vm/hint"
)

var testSpecs = []Flag{
	{Name: "image", Arg: "REF", Usage: "image reference"},
	{Name: "out", Arg: "PATH", Usage: "output directory"},
	{Name: "dry-run", Kind: Bool, Usage: "print the plan"},
	{Name: "build-arg", Kind: Repeat, Arg: "KEY=VALUE", Usage: "build argument"},
	{Name: "file", Arg: "PATH", Usage: "Dockerfile", Short: "f", Aliases: []string{"dockerfile"}},
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
		check   func(t *testing.T, f *Flags)
	}{
		{name: "space form", args: []string{"--image", "busybox", "--out", "o"}, check: func(t *testing.T, f *Flags) {
			if f.Str("image", "") != "busybox" || f.Str("out", "") != "o" {
				t.Errorf("got image=%q out=%q", f.Str("image", ""), f.Str("out", ""))
			}
		}},
		{name: "equals form", args: []string{"--image=a=b", "--out=o"}, check: func(t *testing.T, f *Flags) {
			if f.Str("image", "") != "a=b" {
				t.Errorf("image = %q, want a=b", f.Str("image", ""))
			}
		}},
		{name: "empty value with equals", args: []string{"--image="}, check: func(t *testing.T, f *Flags) {
			if !f.Has("image") || f.Str("image", "x") != "" {
				t.Errorf("want empty image value")
			}
		}},
		{name: "bool", args: []string{"--dry-run"}, check: func(t *testing.T, f *Flags) {
			if !f.Bool("dry-run") {
				t.Error("dry-run not set")
			}
		}},
		{name: "bool false", args: []string{"--dry-run=false"}, check: func(t *testing.T, f *Flags) {
			if f.Bool("dry-run") {
				t.Error("dry-run set")
			}
		}},
		{name: "bool bad value", args: []string{"--dry-run=maybe"}, wantErr: "Flag --dry-run takes no value"},
		{name: "repeatable keeps order", args: []string{"--build-arg", "A=1", "--build-arg=B=2"}, check: func(t *testing.T, f *Flags) {
			if got := f.List("build-arg"); !reflect.DeepEqual(got, []string{"A=1", "B=2"}) {
				t.Errorf("build-arg = %q", got)
			}
		}},
		{name: "duplicate single", args: []string{"--out", "a", "--out", "b"}, wantErr: "Flag --out was given more than once."},
		{name: "duplicate bool", args: []string{"--dry-run", "--dry-run"}, wantErr: "Flag --dry-run was given more than once."},
		{name: "unknown", args: []string{"--imag", "x"}, wantErr: "Unknown flag --imag."},
		{name: "positional", args: []string{"busybox"}, wantErr: `Unexpected argument "busybox".`},
		{name: "single dash", args: []string{"-o"}, wantErr: `Unknown flag -o.`},
		{name: "short flag", args: []string{"-f", "D"}, check: func(t *testing.T, f *Flags) {
			if f.Str("file", "") != "D" {
				t.Errorf("file = %q", f.Str("file", ""))
			}
		}},
		{name: "short flag joined", args: []string{"-fD"}, check: func(t *testing.T, f *Flags) {
			if f.Str("file", "") != "D" {
				t.Errorf("file = %q", f.Str("file", ""))
			}
		}},
		{name: "short flag with =", args: []string{"-f=D"}, check: func(t *testing.T, f *Flags) {
			if f.Str("file", "") != "D" {
				t.Errorf("file = %q", f.Str("file", ""))
			}
		}},
		{name: "alias", args: []string{"--dockerfile", "D"}, check: func(t *testing.T, f *Flags) {
			if f.Str("file", "") != "D" {
				t.Errorf("file = %q", f.Str("file", ""))
			}
		}},
		{name: "short and long both", args: []string{"-f", "A", "--file", "B"}, wantErr: "Flag --file was given more than once."},
		{name: "short flag missing value", args: []string{"-f"}, wantErr: "Flag --file requires a value."},
		{name: "docker -q", args: []string{"-q"}, wantErr: "Unknown flag -q."},
		{name: "missing value at end", args: []string{"--out"}, wantErr: "Flag --out requires a value."},
		{name: "missing value before flag", args: []string{"--out", "--dry-run"}, wantErr: "Flag --out requires a value."},
		{name: "help", args: []string{"--out", "x", "--help"}, wantErr: "help requested"},
		{name: "short help", args: []string{"-h"}, wantErr: "help requested"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse(tt.args, testSpecs)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, f)
		})
	}
}

func TestUnknownFlagSuggests(t *testing.T) {
	_, err := Parse([]string{"--imag", "x"}, testSpecs)
	hints := hint.Of(err)
	if len(hints) == 0 || hints[0] != "Did you mean --image?" {
		t.Fatalf("hints = %q", hints)
	}
}

type hinted struct{ error }

func (hinted) Hints() []string { return []string{"inner hint"} }

func TestRender(t *testing.T) {
	err := &hint.Error{Msg: "outer", Fixes: []string{"outer hint"}, Err: hinted{errors.New("inner")}}
	var b bytes.Buffer
	Render(&b, err)
	want := "Error: outer: inner\nHow to fix:\n  - outer hint\n  - inner hint\n"
	if b.String() != want {
		t.Fatalf("got %q, want %q", b.String(), want)
	}
	b.Reset()
	Render(&b, errors.New("plain"))
	if b.String() != "Error: plain\n" {
		t.Fatalf("got %q", b.String())
	}
	// An interrupt in the middle of something with hints (hashing a base
	// bundle) is only an interrupt.
	b.Reset()
	Render(&b, &hint.Error{Msg: "--base /b is not a usable Gondolin base", Fixes: []string{"Pass --base DIR"}, Err: context.Canceled})
	if b.String() != "Error: interrupted\n" {
		t.Fatalf("interrupt: got %q", b.String())
	}
}

func TestExecExitCodes(t *testing.T) {
	cmd := &Command{Name: "x", Usage: "x [flags]", Flags: append(testSpecs[:len(testSpecs):len(testSpecs)], Flag{Name: "progress", Arg: "MODE"}),
		Run: func(ctx context.Context, f *Flags, stdout, stderr io.Writer) error {
			if f.Str("image", "") == "fail" {
				return &hint.Error{Msg: "it failed", Fixes: []string{"do better"}}
			}
			return PrintJSON(stdout, map[string]string{"ok": "yes"})
		}}
	tests := []struct {
		args               []string
		code               int
		stdout, stderrPart string
	}{
		{[]string{"--image", "ok"}, 0, "{\n  \"ok\": \"yes\"\n}\n", ""},
		{[]string{"--image", "fail"}, 1, "", "Error: it failed\nHow to fix:\n  - do better\n"},
		{[]string{"--help"}, 0, "x [flags]\n\nFlags:\n", ""},
		{[]string{"--bogus"}, 1, "", "Error: Unknown flag --bogus.\n"},
		// --progress json: the error is one JSON event, also when the
		// flags did not parse.
		{[]string{"--image", "fail", "--progress", "json"}, 1, "", `{"type":"error","message":"it failed","hints":["do better"]}` + "\n"},
		{[]string{"--bogus", "--progress=json"}, 1, "", `{"type":"error","message":"Unknown flag --bogus.","hints":["Run with --help to see the accepted flags."]}` + "\n"},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		code := cmd.Exec(context.Background(), tt.args, &out, &errb)
		if code != tt.code {
			t.Errorf("%v: code %d, want %d", tt.args, code, tt.code)
		}
		if !strings.HasPrefix(out.String(), tt.stdout) || (tt.stdout == "" && out.Len() > 0) {
			t.Errorf("%v: stdout %q, want prefix %q", tt.args, out.String(), tt.stdout)
		}
		if !strings.Contains(errb.String(), tt.stderrPart) || (tt.stderrPart == "" && errb.Len() > 0) {
			t.Errorf("%v: stderr %q, want %q", tt.args, errb.String(), tt.stderrPart)
		}
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true}, {"1024", 1024, true}, {"512M", 512 << 20, true}, {"2G", 2 << 30, true},
		{"2GiB", 2 << 30, true}, {"1t", 1 << 40, true}, {"4KB", 4096, true},
		{"", 0, false}, {"-1", 0, false}, {"1.5G", 0, false}, {"lots", 0, false}, {"99999999999T", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseSize("size", tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestProgressMode(t *testing.T) {
	specs := []Flag{{Name: "progress", Arg: "MODE"}, {Name: "quiet", Kind: Bool}}
	for _, tc := range []struct {
		args []string
		want string
		err  string
	}{
		{nil, "plain", ""}, // stderr is not a terminal here
		{[]string{"--progress", "auto"}, "plain", ""},
		{[]string{"--progress", "PLAIN"}, "plain", ""},
		{[]string{"--progress", "quiet"}, "quiet", ""},
		{[]string{"--quiet"}, "quiet", ""},
		{[]string{"--quiet", "--progress", "quiet"}, "quiet", ""},
		{[]string{"--quiet", "--progress", "plain"}, "", "contradict"},
		{[]string{"--progress", "tty"}, "", "needs a terminal"},
		{[]string{"--progress", "fancy"}, "", `Unknown --progress "fancy"`},
	} {
		f, err := Parse(tc.args, specs)
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		got, err := ProgressMode(f, &stderr)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: err = %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%v: %q, %v; want %q", tc.args, got, err, tc.want)
		}
	}
}

// TestVersionScriptAgrees: scripts/version.sh, which make stamps into
// binaries, prints what an unstamped build of the same checkout reports.
func TestVersionScriptAgrees(t *testing.T) {
	root := filepath.Join("..", "..")
	rev, err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	out, err := exec.Command("sh", filepath.Join(root, "scripts", "version.sh")).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.TrimSpace(string(out))
	if strings.HasPrefix(got, "v") {
		t.Skipf("HEAD is tagged %s", got)
	}
	status, _ := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output()
	if want := vcsVersion(strings.TrimSpace(string(rev)), len(status) > 0); got != want {
		t.Errorf("scripts/version.sh says %q, an unstamped build %q", got, want)
	}
}

// TestFlagsUndeclared: reading a flag the command does not declare (a
// misspelt name), or as another kind, is a bug that panics at once rather
// than a flag that silently keeps its default.
func TestFlagsUndeclared(t *testing.T) {
	f, err := Parse([]string{"--image", "x", "--dry-run"}, testSpecs)
	if err != nil {
		t.Fatal(err)
	}
	if f.Str("image", "") != "x" || !f.Bool("dry-run") || !f.Declares("image") || f.Declares("imagee") {
		t.Fatal("declared flags misread")
	}
	for name, read := range map[string]func(){
		"misspelt":        func() { f.Str("imagee", "") },
		"bool as valued":  func() { f.Has("dry-run") },
		"valued as bool":  func() { f.Bool("image") },
		"undeclared list": func() { f.List("build-args") },
	} {
		func() {
			defer func() {
				if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "the command has no") {
					t.Errorf("%s: recovered %v, want a panic naming the flag", name, r)
				}
			}()
			read()
		}()
	}
}
