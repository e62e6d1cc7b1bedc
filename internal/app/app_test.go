package app

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker2vm/docker2vm/internal/cli"
)

func run(t *testing.T, cmd *cli.Command, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := cmd.Exec(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestOCI2GondolinFlagRules(t *testing.T) {
	tar := filepath.Join(t.TempDir(), "img.tar")
	if err := os.WriteFile(tar, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		args   []string
		stderr string
	}{
		{"no source", []string{"--out", "o"}, "Error: Exactly one input source is required.\nHow to fix:\n  - Pass one of --image REF, --oci-layout PATH or --oci-tar PATH.\n"},
		{"two sources", []string{"--image", "a", "--oci-tar", tar, "--out", "o"}, "Error: Input source flags are mutually exclusive.\nHow to fix:\n  - Pass only one of --image, --oci-tar.\n"},
		{"three sources", []string{"--image", "a", "--oci-layout", "l", "--oci-tar", tar, "--out", "o"}, "Error: Input source flags are mutually exclusive."},
		{"missing out", []string{"--image", "busybox"}, "Error: Missing required flag --out."},
		{"bad mode", []string{"--image", "busybox", "--out", "o", "--mode", "disk"}, `Error: Invalid --mode "disk".`},
		{"bad platform", []string{"--image", "busybox", "--out", "o", "--platform", "windows/amd64"}, "windows/amd64"},
		{"bad arch", []string{"--image", "busybox", "--out", "o", "--platform", "linux/riscv64"}, "linux/riscv64"},
		{"unknown flag", []string{"--image", "busybox", "--out", "o", "--fast"}, "Error: Unknown flag --fast."},
		{"positional", []string{"busybox", "--out", "o"}, `Error: Unexpected argument "busybox".`},
		{"duplicate", []string{"--image", "a", "--image", "b", "--out", "o"}, "Error: Flag --image was given more than once."},
		{"missing tar", []string{"--oci-tar", "/nonexistent/x.tar", "--out", "o"}, "Error: --oci-tar /nonexistent/x.tar cannot be read: no such file or directory"},
		{"bad size", []string{"--image", "a", "--out", "o", "--size", "big"}, `Error: Invalid size for --size: "big".`},
		{"long label", []string{"--image", "a", "--out", "o", "--fs-label", "a-label-longer-than-16"}, "is longer than 16 bytes"},
		{"empty image", []string{"--image", "", "--out", "o"}, "Error: --image needs a reference."},
		{"platform twice", []string{"--image", "a", "--out", "o", "--platform", "arm64,linux/arm64/v8"}, "platform linux/arm64 is given twice"},
		{"publish rootfs", []string{"--image", "a", "--out", "o", "--publish", "r", "--tag", "a:1"}, "--publish needs --mode assets"},
		{"publish untagged", []string{"--image", "a", "--out", "o", "--publish", "r", "--mode", "assets"}, "--publish needs --tag NAME:TAG"},
		{"publish-url alone", []string{"--image", "a", "--out", "o", "--publish-url", "https://x/", "--mode", "assets"}, "--publish-url needs --publish DIR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := run(t, OCI2Gondolin(), tt.args...)
			if code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			if stdout != "" {
				t.Errorf("stdout must stay empty on failure, got %q", stdout)
			}
			if !strings.Contains(stderr, tt.stderr) {
				t.Errorf("stderr = %q, want it to contain %q", stderr, tt.stderr)
			}
		})
	}
}

func TestModeCaseInsensitive(t *testing.T) {
	for _, m := range []string{"ROOTFS", "Assets", "rootfs"} {
		f, err := cli.Parse([]string{"--mode", m}, outputFlags)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := parseMode(f); err != nil {
			t.Errorf("mode %q: %v", m, err)
		}
	}
}

func TestHelp(t *testing.T) {
	for _, cmd := range []*cli.Command{OCI2Gondolin(), Dockerfile2Gondolin()} {
		code, stdout, stderr := run(t, cmd, "--help")
		if code != 0 || stderr != "" {
			t.Errorf("%s --help: code %d stderr %q", cmd.Name, code, stderr)
		}
		for _, f := range cmd.Flags {
			if !strings.Contains(stdout, "--"+f.Name) {
				t.Errorf("%s --help does not document --%s", cmd.Name, f.Name)
			}
		}
	}
}

func TestDockerfile2GondolinFlagRules(t *testing.T) {
	dir := t.TempDir()
	df := filepath.Join(dir, "Dockerfile")
	if err := os.WriteFile(df, []byte("FROM scratch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		args   []string
		stderr string
	}{
		{"missing file", []string{"--context", dir, "--out", "o"}, "Error: Missing required flag --file."},
		{"missing context", []string{"--file", df, "--out", "o"}, "Error: Missing required flag --context."},
		{"missing out", []string{"--file", df, "--context", dir}, "Error: Missing required flag --out."},
		{"bad builder", []string{"--file", df, "--context", dir, "--out", "o", "--builder", "kaniko", "--dry-run"}, `Unknown builder "kaniko"`},
		{"bad build arg", []string{"--file", df, "--context", dir, "--out", "o", "--build-arg", "NOEQUALS", "--dry-run"}, `Invalid --build-arg "NOEQUALS"`},
		{"dockerfile missing", []string{"--file", df + "x", "--context", dir, "--out", "o", "--dry-run"}, "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := run(t, Dockerfile2Gondolin(), tt.args...)
			if code != 1 || stdout != "" || !strings.Contains(stderr, tt.stderr) {
				t.Errorf("code %d stdout %q stderr %q; want 1, empty, %q", code, stdout, stderr, tt.stderr)
			}
		})
	}
}

func TestDockerfile2GondolinDryRun(t *testing.T) {
	dir := t.TempDir()
	df := filepath.Join(dir, "Dockerfile")
	if err := os.WriteFile(df, []byte("FROM scratch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	code, stdout, stderr := run(t, Dockerfile2Gondolin(), "--file", df, "--context", dir, "--out", out,
		"--builder", "buildctl", "--buildkit-addr", "tcp://127.0.0.1:1234", "--platform", "linux/arm64",
		"--build-arg", "A=1", "--target", "t", "--dry-run")
	if code != 0 {
		t.Fatalf("code %d stderr %q", code, stderr)
	}
	var plan DryRunPlan
	if err := json.Unmarshal([]byte(stdout), &plan); err != nil {
		t.Fatalf("stdout is not one JSON document: %v\n%s", err, stdout)
	}
	if !plan.DryRun || plan.Platform != "linux/arm64" || plan.Builder != "buildctl" || len(plan.Build) != 1 {
		t.Fatalf("plan = %+v", plan)
	}
	argv := strings.Join(plan.Build[0].Argv, " ")
	for _, want := range []string{"buildctl --addr tcp://127.0.0.1:1234 build", "--opt platform=linux/arm64", "--opt build-arg:A=1", "--opt target=t"} {
		if !strings.Contains(argv, want) {
			t.Errorf("build command %q lacks %q", argv, want)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("dry run created %s", out)
	}
}
