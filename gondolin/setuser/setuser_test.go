package setuser_test

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/docker2vm/docker2vm/gondolin/setuser"
	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/testenv/qemuuser"
)

// goArch maps Gondolin's architecture names to GOARCH.
var goArch = map[string]string{"x86_64": "amd64", "aarch64": "arm64"}

func TestBinaryELF(t *testing.T) {
	for _, tc := range []struct {
		arch    string
		machine elf.Machine
	}{
		{"x86_64", elf.EM_X86_64},
		{"aarch64", elf.EM_AARCH64},
	} {
		t.Run(tc.arch, func(t *testing.T) {
			b, err := setuser.Binary(tc.arch)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) == 0 || len(b) > 2048 {
				t.Errorf("%d bytes; it should be a few hundred", len(b))
			}
			f, err := elf.NewFile(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Class != elf.ELFCLASS64 || f.Data != elf.ELFDATA2LSB || f.Type != elf.ET_EXEC || f.Machine != tc.machine {
				t.Errorf("class %v data %v type %v machine %v", f.Class, f.Data, f.Type, f.Machine)
			}
			var inLoad bool
			for _, p := range f.Progs {
				switch p.Type {
				case elf.PT_INTERP, elf.PT_DYNAMIC:
					t.Errorf("has %v: not static", p.Type)
				case elf.PT_LOAD:
					if f.Entry >= p.Vaddr && f.Entry < p.Vaddr+p.Filesz && p.Flags&elf.PF_X != 0 {
						inLoad = true
					}
					if p.Flags&elf.PF_W != 0 && p.Flags&elf.PF_X != 0 {
						t.Errorf("a writable and executable segment: %+v", p.ProgHeader)
					}
				case elf.PT_GNU_STACK:
					if p.Flags&elf.PF_X != 0 {
						t.Error("executable stack")
					}
				}
			}
			if !inLoad {
				t.Errorf("entry %#x is in no executable PT_LOAD segment", f.Entry)
			}
			if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
				t.Errorf("imported libraries %v, %v", libs, err)
			}
			if _, err := f.Symbols(); !errors.Is(err, elf.ErrNoSymbols) {
				t.Errorf("not stripped: %v", err)
			}
			for _, s := range f.Sections {
				if strings.HasPrefix(s.Name, ".note") {
					t.Errorf("has %s (a build id or property note)", s.Name)
				}
			}
		})
	}
}

// TestBinaryArch: every name of the two architectures gives its program
// (internal/arch), any other architecture an error.
func TestBinaryArch(t *testing.T) {
	for _, names := range [][]string{{"x86_64", "amd64"}, {"aarch64", "arm64"}} {
		a, err := setuser.Binary(names[0])
		b, err2 := setuser.Binary(names[1])
		if err != nil || err2 != nil || len(a) == 0 || &a[0] != &b[0] {
			t.Errorf("Binary(%s) and Binary(%s): %v %v", names[0], names[1], err, err2)
		}
	}
	for _, arch := range []string{"", "riscv64", "arm"} {
		if _, err := setuser.Binary(arch); err == nil {
			t.Errorf("Binary(%q) did not fail", arch)
		}
	}
}

// requireBinutils skips the test (fails it under CI) unless
// generate.sh finds an assembler and linker for arch: the target-prefixed
// tools, or the native ones on a host of that architecture.
func requireBinutils(t *testing.T, arch string) {
	t.Helper()
	for _, tool := range []string{"as", "ld"} {
		if _, ok := require.Look(arch + "-linux-gnu-" + tool); ok {
			continue
		}
		if goArch[arch] == machineArch(t) {
			if _, ok := require.Look(tool); ok {
				continue
			}
		}
		require.Tool(t, arch+"-linux-gnu-"+tool)
	}
}

// TestGenerateUpToDate assembles the sources again and compares the result
// with the committed (embedded) programs: run `go generate` after
// changing asm/*.s.
func TestGenerateUpToDate(t *testing.T) {
	for _, arch := range setuser.Arches {
		requireBinutils(t, arch)
	}
	out := t.TempDir()
	if b, err := exec.Command("sh", "generate.sh", out).CombinedOutput(); err != nil {
		t.Fatalf("generate.sh: %v\n%s", err, b)
	}
	for _, arch := range setuser.Arches {
		got, err := os.ReadFile(filepath.Join(out, setuser.Name+"-"+arch))
		if err != nil {
			t.Fatal(err)
		}
		want, _ := setuser.Binary(arch)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: the committed program differs from what asm/%s.s assembles to (%d bytes, committed %d): run `go generate ./gondolin/setuser`", arch, arch, len(got), len(want))
		}
	}
}

// probeSource prints what the program it becomes runs as: ids, groups,
// arguments and one environment variable.
const probeSource = `package main

import (
	"fmt"
	"os"
	"sort"
)

func main() {
	groups, err := os.Getgroups()
	if err != nil {
		fmt.Println("getgroups:", err)
		os.Exit(3)
	}
	sort.Ints(groups)
	fmt.Printf("uid=%d euid=%d gid=%d egid=%d groups=%v\n", os.Getuid(), os.Geteuid(), os.Getgid(), os.Getegid(), groups)
	fmt.Printf("args=%q\n", os.Args)
	fmt.Printf("env=%q\n", os.Getenv("D2V_PROBE"))
}
`

// shared makes a directory every user can read and enter (t.TempDir's
// are 0700, which a switched-to user could not exec from).
func shared(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "setuser-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// machineArch is the GOARCH of the machine's own programs, which is not
// runtime.GOARCH when this test binary itself runs under qemu-user (make
// test-arm64): a host program such as uname runs natively even then.
func machineArch(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("uname", "-m").Output()
	if err != nil {
		return runtime.GOARCH
	}
	switch strings.TrimSpace(string(out)) {
	case "x86_64":
		return "amd64"
	case "aarch64", "arm64":
		return "arm64"
	}
	return runtime.GOARCH
}

// buildProbe builds probeSource, static, for the machine's architecture.
func buildProbe(t *testing.T, dir string) string {
	t.Helper()
	goTool := require.Tool(t, "go")
	src := filepath.Join(dir, "probe.go")
	if err := os.WriteFile(src, []byte(probeSource), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "probe")
	cmd := exec.Command(goTool, "build", "-o", bin, src)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+machineArch(t), "GOFLAGS=", "GOWORK=off", "GOTOOLCHAIN=local")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the probe: %v\n%s", err, out)
	}
	return bin
}

// runner returns how to run a program for arch on this host: directly,
// or through qemu-user (qemuuser.Path).
func runner(t *testing.T, arch string) []string {
	t.Helper()
	if goArch[arch] == machineArch(t) {
		return nil
	}
	return []string{qemuuser.Path(t, arch)}
}

// TestRun runs the program of each architecture (the foreign one under
// qemu-user) and checks what the program it execs runs as. That program
// is built for the host: under qemu-user an execve runs on the host
// kernel, which cannot start a foreign binary without binfmt_misc, and
// what is tested is the switch, not the target.
func TestRun(t *testing.T) {
	dir := shared(t)
	probe := buildProbe(t, dir)
	noexec := filepath.Join(dir, "noexec")
	if err := os.WriteFile(noexec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	type tc struct {
		name      string
		args      []string
		root      bool   // needs root
		asNobody  bool   // start the program as uid/gid 65534
		code      int    // exit status
		stdout    string // exact, when code is 0
		stderrHas string
	}
	probeOut := func(ids, groups string, args ...string) string {
		return fmt.Sprintf("%s groups=[%s]\nargs=%q\nenv=\"probe-env\"\n", ids, groups, args)
	}
	cases := []tc{
		{name: "switch with groups", root: true,
			args:   []string{"65534", "65533", "100,101", probe, "argv0-kept", "a b", "", "--flag"},
			stdout: probeOut("uid=65534 euid=65534 gid=65533 egid=65533", "100 101", "argv0-kept", "a b", "", "--flag")},
		{name: "no groups", root: true,
			args:   []string{"1000", "1000", "", probe, "p"},
			stdout: probeOut("uid=1000 euid=1000 gid=1000 egid=1000", "", "p")},
		{name: "root stays root", root: true,
			args:   []string{"0", "0", "0", probe, "p"},
			stdout: probeOut("uid=0 euid=0 gid=0 egid=0", "0", "p")},
		{name: "largest ids and leading zeros", root: true,
			args:   []string{"4294967294", "0004294967294", "4294967294,0", probe, "p"},
			stdout: probeOut("uid=4294967294 euid=4294967294 gid=4294967294 egid=4294967294", "0 4294967294", "p")},
		{name: "missing program", root: true, args: []string{"1", "1", "", "/nonexistent/prog", "prog"},
			code: 127, stderrHas: "docker2vm-setuser: exec /nonexistent/prog: no such file or directory\n"},
		{name: "not executable", root: true, args: []string{"1", "1", "", noexec, "x"},
			code: 126, stderrHas: "docker2vm-setuser: exec " + noexec + ": permission denied\n"},
		{name: "a directory", root: true, args: []string{"1", "1", "", dir, "x"},
			code: 126, stderrHas: "docker2vm-setuser: exec " + dir + ": permission denied\n"},
		{name: "not a directory", root: true, args: []string{"1", "1", "", probe + "/x", "x"},
			code: 126, stderrHas: "docker2vm-setuser: exec " + probe + "/x: errno 20\n"},
		{name: "not root", asNobody: true, args: []string{"1", "1", "", probe, "p"},
			code: 126, stderrHas: "docker2vm-setuser: setgroups: operation not permitted\n"},
		{name: "too few arguments", args: []string{"1", "1", "", probe},
			code: 125, stderrHas: "usage: docker2vm-setuser UID GID GIDS PATH ARGV0 [ARG...]\n"},
		{name: "no arguments", code: 125, stderrHas: "usage:"},
	}
	for _, bad := range []struct{ uid, gid, groups, what string }{
		{"nobody", "1", "", "invalid uid: nobody"},
		{"", "1", "", "invalid uid: \n"},
		{"4294967295", "1", "", "invalid uid: 4294967295"},
		{"4294967296", "1", "", "invalid uid: 4294967296"},
		{"99999999999999999999999", "1", "", "invalid uid: 9999"},
		{"+1", "1", "", "invalid uid: +1"},
		{"1 ", "1", "", "invalid uid: 1 "},
		{"1", "-1", "", "invalid gid: -1"},
		{"1", "0x10", "", "invalid gid: 0x10"},
		{"1", "1", "1,,2", "invalid group list: 1,,2"},
		{"1", "1", "1,", "invalid group list: 1,"},
		{"1", "1", ",1", "invalid group list: ,1"},
		{"1", "1", "1,4294967295", "invalid group list: 1,4294967295"},
		{"1", "1", "staff", "invalid group list: staff"},
	} {
		cases = append(cases, tc{name: "bad " + bad.what, args: []string{bad.uid, bad.gid, bad.groups, probe, "p"},
			code: 125, stderrHas: "docker2vm-setuser: " + bad.what})
	}

	for _, arch := range setuser.Arches {
		t.Run(arch, func(t *testing.T) {
			b, err := setuser.Binary(arch)
			if err != nil {
				t.Fatal(err)
			}
			prog := filepath.Join(dir, setuser.Name+"-"+arch)
			if err := os.WriteFile(prog, b, 0o755); err != nil {
				t.Fatal(err)
			}
			run := runner(t, arch)
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					if c.root {
						require.Root(t, "to switch users")
					}
					argv := append(append(append([]string{}, run...), prog), c.args...)
					cmd := exec.Command(argv[0], argv[1:]...)
					cmd.Env = append(os.Environ(), "D2V_PROBE=probe-env")
					if c.asNobody && os.Getuid() == 0 {
						cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
					}
					var stdout, stderr bytes.Buffer
					cmd.Stdout, cmd.Stderr = &stdout, &stderr
					err := cmd.Run()
					code := 0
					var ee *exec.ExitError
					if errors.As(err, &ee) {
						code = ee.ExitCode()
					} else if err != nil {
						t.Fatal(err)
					}
					if code != c.code {
						t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, c.code, &stdout, &stderr)
					}
					if c.code == 0 && (stdout.String() != c.stdout || stderr.Len() != 0) {
						t.Errorf("stdout:\n%s\nwant:\n%s\nstderr: %s", &stdout, c.stdout, &stderr)
					}
					if c.code != 0 && (!strings.Contains(stderr.String(), c.stderrHas) || stdout.Len() != 0) {
						t.Errorf("stderr %q, want it to contain %q; stdout %q", &stderr, c.stderrHas, &stdout)
					}
				})
			}
		})
	}
}
