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

// bound holds a variable of every kind, set by the flags testFlags binds.
type bound struct {
	image     string
	out       Optional
	dryRun    bool
	buildArgs []string
	file      Optional
	label     string
}

// testFlags binds b's variables: --image (plain value), --out (optional
// value), --dry-run, --build-arg (repeatable), --file (-f, --dockerfile)
// and the hidden --label.
func testFlags(b *bound) []Flag {
	file := OptionalVar(&b.file, "file", "PATH", "Dockerfile").WithShort("f")
	file.Aliases = []string{"dockerfile"}
	label := StringVar(&b.label, "label", "NAME", "deprecated")
	label.Hidden = true
	return []Flag{
		StringVar(&b.image, "image", "REF", "image reference"),
		OptionalVar(&b.out, "out", "PATH", "output directory"),
		BoolVar(&b.dryRun, "dry-run", "print the plan"),
		ListVar(&b.buildArgs, "build-arg", "KEY=VALUE", "build argument"),
		file,
		label,
	}
}

var testSpecs = testFlags(new(bound))

func TestParse(t *testing.T) {
	set := func(v string) Optional { return Optional{Value: v, Set: true} }
	tests := []struct {
		name    string
		args    []string
		wantErr string
		want    bound
	}{
		{name: "nothing given", args: nil, want: bound{}},
		{name: "space form", args: []string{"--image", "busybox", "--out", "o"}, want: bound{image: "busybox", out: set("o")}},
		{name: "equals form", args: []string{"--image=a=b", "--out=o"}, want: bound{image: "a=b", out: set("o")}},
		{name: "empty value with equals", args: []string{"--image=", "--out="}, want: bound{out: set("")}},
		{name: "empty value with space", args: []string{"--out", ""}, want: bound{out: set("")}},
		{name: "bool", args: []string{"--dry-run"}, want: bound{dryRun: true}},
		{name: "bool true", args: []string{"--dry-run=yes"}, want: bound{dryRun: true}},
		{name: "bool false", args: []string{"--dry-run=false"}, want: bound{}},
		{name: "bool bad value", args: []string{"--dry-run=maybe"}, wantErr: "Flag --dry-run takes no value"},
		{name: "repeatable once", args: []string{"--build-arg", "A=1"}, want: bound{buildArgs: []string{"A=1"}}},
		{name: "repeatable keeps order", args: []string{"--build-arg", "A=1", "--build-arg=B=2"}, want: bound{buildArgs: []string{"A=1", "B=2"}}},
		{name: "repeatable same value twice", args: []string{"--build-arg", "A", "--build-arg", "A"}, want: bound{buildArgs: []string{"A", "A"}}},
		{name: "duplicate single", args: []string{"--out", "a", "--out", "b"}, wantErr: "Flag --out was given more than once."},
		{name: "duplicate single, one empty", args: []string{"--image=", "--image", "b"}, wantErr: "Flag --image was given more than once."},
		{name: "duplicate bool", args: []string{"--dry-run", "--dry-run"}, wantErr: "Flag --dry-run was given more than once."},
		{name: "duplicate bool, one false", args: []string{"--dry-run=false", "--dry-run"}, wantErr: "Flag --dry-run was given more than once."},
		{name: "unknown", args: []string{"--imag", "x"}, wantErr: "Unknown flag --imag."},
		{name: "positional", args: []string{"busybox"}, wantErr: `Unexpected argument "busybox".`},
		{name: "double dash", args: []string{"--"}, wantErr: `Unexpected argument "--".`},
		{name: "single dash", args: []string{"-o"}, wantErr: `Unknown flag -o.`},
		{name: "short flag", args: []string{"-f", "D"}, want: bound{file: set("D")}},
		{name: "short flag joined", args: []string{"-fD"}, want: bound{file: set("D")}},
		{name: "short flag with =", args: []string{"-f=D"}, want: bound{file: set("D")}},
		{name: "short flag empty with =", args: []string{"-f="}, want: bound{file: set("")}},
		{name: "alias", args: []string{"--dockerfile", "D"}, want: bound{file: set("D")}},
		{name: "alias with =", args: []string{"--dockerfile=D"}, want: bound{file: set("D")}},
		{name: "short and long both", args: []string{"-f", "A", "--file", "B"}, wantErr: "Flag --file was given more than once."},
		{name: "alias and long both", args: []string{"--dockerfile", "A", "--file", "B"}, wantErr: "Flag --file was given more than once."},
		{name: "short flag missing value", args: []string{"-f"}, wantErr: "Flag --file requires a value."},
		{name: "alias missing value", args: []string{"--dockerfile"}, wantErr: "Flag --file requires a value."},
		{name: "docker -q", args: []string{"-q"}, wantErr: "Unknown flag -q."},
		{name: "missing value at end", args: []string{"--out"}, wantErr: "Flag --out requires a value."},
		{name: "missing value before flag", args: []string{"--out", "--dry-run"}, wantErr: "Flag --out requires a value."},
		{name: "hidden flag", args: []string{"--label", "L"}, want: bound{label: "L"}},
		{name: "hidden flag twice", args: []string{"--label", "L", "--label=M"}, wantErr: "Flag --label was given more than once."},
		{name: "a lone dash is a value", args: []string{"--file", "-"}, want: bound{file: set("-")}},
		{name: "help", args: []string{"--out", "x", "--help"}, wantErr: "help requested"},
		{name: "short help", args: []string{"-h"}, wantErr: "help requested"},
		{name: "version", args: []string{"--version"}, wantErr: "version requested"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The variables start from values a parse must clear: every
			// parse starts from "not given".
			b := bound{image: "stale", out: set("stale"), dryRun: true, buildArgs: []string{"stale"}, file: set("stale")}
			err := Parse(tt.args, testFlags(&b))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(b, tt.want) {
				t.Errorf("got %+v, want %+v", b, tt.want)
			}
		})
	}
}

func TestOptionalOr(t *testing.T) {
	for _, tc := range []struct {
		o    Optional
		want string
	}{
		{Optional{}, "def"},
		{Optional{Value: "", Set: true}, ""},
		{Optional{Value: "v", Set: true}, "v"},
	} {
		if got := tc.o.Or("def"); got != tc.want {
			t.Errorf("%+v.Or(def) = %q, want %q", tc.o, got, tc.want)
		}
	}
}

// TestFlagConstructors: each constructor gives its flag the kind its
// variable calls for, and the descriptive fields --help renders.
func TestFlagConstructors(t *testing.T) {
	var (
		s  string
		o  Optional
		b  bool
		l  []string
		fs = []Flag{
			StringVar(&s, "s", "S", "a string"),
			OptionalVar(&o, "o", "O", "an optional string").WithValues("x", "y"),
			BoolVar(&b, "b", "a bool").WithShort("B"),
			ListVar(&l, "l", "L", "a list"),
		}
	)
	want := []struct {
		kind   Kind
		arg    string
		values []string
		short  string
	}{{String, "S", nil, ""}, {String, "O", []string{"x", "y"}, ""}, {Bool, "", nil, "B"}, {Repeat, "L", nil, ""}}
	for i, f := range fs {
		w := want[i]
		if f.Kind() != w.kind || f.Arg != w.arg || !reflect.DeepEqual(f.Values, w.values) || f.Short != w.short {
			t.Errorf("--%s: kind %v arg %q values %q short %q; want %v %q %q %q", f.Name, f.Kind(), f.Arg, f.Values, f.Short, w.kind, w.arg, w.values, w.short)
		}
	}
	if got, want := Usage(fs), "  --s S    a string\n  --o O    an optional string\n  -B, --b  a bool\n  --l L    a list\n"; got != want {
		t.Errorf("Usage:\n%s\nwant:\n%s", got, want)
	}
}

func TestUnknownFlagSuggests(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--imag", "x"}, "Did you mean --image?"},
		{[]string{"--dry"}, "Did you mean --dry-run?"},
		{[]string{"--buildarg", "A"}, "Did you mean --build-arg?"},
		// Hidden flags are accepted, but neither suggested nor listed.
		{[]string{"--labl", "x"}, "Run with --help to see the accepted flags."},
	} {
		hints := hint.Of(Parse(tc.args, testSpecs))
		if len(hints) == 0 || hints[0] != tc.want {
			t.Errorf("%q: hints = %q, want %q first", tc.args, hints, tc.want)
		}
	}
	if u := Usage(testSpecs); strings.Contains(u, "--label") || !strings.Contains(u, "-f, --file PATH") {
		t.Errorf("Usage:\n%s", u)
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
	var b bound
	var progress string
	cmd := &Command{Name: "x", Usage: "x [flags]", Flags: append(testFlags(&b), StringVar(&progress, "progress", "MODE", "")),
		Run: func(ctx context.Context, _ []string, stdout, stderr io.Writer) error {
			if b.image == "fail" {
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
	var progress string
	var quiet bool
	specs := []Flag{StringVar(&progress, "progress", "MODE", ""), BoolVar(&quiet, "quiet", "")}
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
		if err := Parse(tc.args, specs); err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		got, err := ProgressMode(progress, quiet, &stderr)
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

// TestExecArgs: Run gets the positional arguments, up to as many as the
// command names, and the flags' variables as this run's arguments set
// them, not as an earlier run left them.
func TestExecArgs(t *testing.T) {
	var b bound
	var gotArgs []string
	var gotFlags bound
	cmd := &Command{Name: "x", Args: []string{"CONTEXT"}, Flags: testFlags(&b),
		Run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			gotArgs, gotFlags = args, b
			return nil
		}}
	for _, tc := range []struct {
		args      []string
		code      int
		wantArgs  []string
		wantFlags bound
	}{
		{[]string{"--image", "a", "ctx", "--dry-run"}, 0, []string{"ctx"}, bound{image: "a", dryRun: true}},
		{[]string{"--build-arg", "A"}, 0, nil, bound{buildArgs: []string{"A"}}},
		{[]string{"-f", "D", "ctx"}, 0, []string{"ctx"}, bound{file: Optional{Value: "D", Set: true}}},
		{[]string{"ctx", "more"}, 1, nil, bound{}},
	} {
		gotArgs, gotFlags = nil, bound{}
		var stderr bytes.Buffer
		if code := cmd.Exec(context.Background(), tc.args, io.Discard, &stderr); code != tc.code {
			t.Errorf("%q: exit %d, want %d (%s)", tc.args, code, tc.code, stderr.String())
		}
		if !reflect.DeepEqual(gotArgs, tc.wantArgs) || !reflect.DeepEqual(gotFlags, tc.wantFlags) {
			t.Errorf("%q: Run got %q %+v, want %q %+v", tc.args, gotArgs, gotFlags, tc.wantArgs, tc.wantFlags)
		}
	}
}

// TestFlagWithoutVariable: a Flag written as a literal sets nothing, so
// parsing refuses it at once rather than accept a flag that silently
// keeps its default.
func TestFlagWithoutVariable(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "--image sets no variable") {
			t.Errorf("recovered %v, want a panic naming the flag", r)
		}
	}()
	Parse(nil, []Flag{{Name: "image", Arg: "REF"}})
}
