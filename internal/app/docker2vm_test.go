package app

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker2vm/docker2vm/internal/cachedir"
	"github.com/docker2vm/docker2vm/internal/cli"
	"github.com/docker2vm/docker2vm/internal/require"
)

func TestDocker2VMCache(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(cachedir.BlobsDir(root), 0o755)
	os.WriteFile(filepath.Join(cachedir.BlobsDir(root), "abc"), make([]byte, 50000), 0o644)
	os.MkdirAll(filepath.Join(cachedir.ResultsDir(root), "key1"), 0o755)
	os.WriteFile(filepath.Join(cachedir.ResultsDir(root), "key1", cachedir.ResultFile), []byte(`{"image":"alpine:3.20","platform":"linux/amd64","layers":["sha256:abc"]}`), 0o644)

	code, out, errs := run(t, Docker2VM(), "cache", "du", "--cache-dir", root)
	if code != 0 || !strings.Contains(out, "blob") || !strings.Contains(out, "sha256:abc") || !strings.Contains(out, "2 entries") ||
		!strings.Contains(out, "layer of alpine:3.20") || !strings.Contains(out, "alpine:3.20 linux/amd64") {
		t.Errorf("cache du: %d\n%s%s", code, out, errs)
	}
	code, out, _ = run(t, Docker2VM(), "cache", "du", "--cache-dir", root, "--json")
	var du struct {
		Entries []cachedir.Entry `json:"entries"`
		Bytes   int64            `json:"bytes"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &du) != nil || len(du.Entries) != 2 || du.Bytes < 50000 {
		t.Errorf("cache du --json: %d %s", code, out)
	}
	code, out, _ = run(t, Docker2VM(), "cache", "prune", "--cache-dir", root, "--keep-storage", "1G")
	if code != 0 || !strings.Contains(out, "removed 0 entries") {
		t.Errorf("prune under the limit: %d %s", code, out)
	}
	// Without --keep-storage, prune keeps DOCKER2VM_CACHE_MAX.
	t.Setenv(cachedir.MaxEnv, "1")
	code, out, _ = run(t, Docker2VM(), "cache", "prune", "--cache-dir", root, "--dry-run")
	if code != 0 || !strings.Contains(out, "would remove 2 entries") {
		t.Errorf("prune --dry-run to DOCKER2VM_CACHE_MAX: %d %s", code, out)
	}
	t.Setenv(cachedir.MaxEnv, "zz")
	if code, _, errs := run(t, Docker2VM(), "cache", "prune", "--cache-dir", root); code != 1 || !strings.Contains(errs, `Invalid DOCKER2VM_CACHE_MAX "zz"`) {
		t.Errorf("prune with a bad DOCKER2VM_CACHE_MAX: %d %s", code, errs)
	}
	t.Setenv(cachedir.MaxEnv, "")
	code, out, _ = run(t, Docker2VM(), "cache", "prune", "--cache-dir", root, "--all", "--dry-run")
	if code != 0 || !strings.Contains(out, "would remove 2 entries") || !strings.Contains(out, "layer of alpine:3.20") {
		t.Errorf("prune --all --dry-run: %d %s", code, out)
	}
	if es, _ := cachedir.List(root); len(es) != 2 {
		t.Errorf("prune --dry-run removed entries: %d left", len(es))
	}
	code, out, _ = run(t, Docker2VM(), "cache", "prune", "--cache-dir", root, "--all")
	if code != 0 || !strings.Contains(out, "removed 2 entries") {
		t.Errorf("prune --all: %d %s", code, out)
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"cache dir is a file", []string{"cache", "du", "--cache-dir", "/etc/hostname"}, "is not a directory"},
		{"bad keep-storage", []string{"cache", "prune", "--cache-dir", root, "--keep-storage", "lots"}, "Invalid size for --keep-storage"},
		{"all and keep", []string{"cache", "prune", "--cache-dir", root, "--all", "--keep-storage", "1G"}, "cannot be used together"},
		{"unknown shell", []string{"completion", "tcsh"}, `Unknown shell "tcsh"`},
		{"no shell", []string{"completion"}, "needs a shell"},
		{"unknown command", []string{"cahce"}, "Unknown command \"cahce\" for docker2vm.\nHow to fix:\n  - Did you mean cache?"},
		{"unknown command far from any", []string{"xyzzy"}, "Unknown command \"xyzzy\" for docker2vm.\nHow to fix:\n  - Use one of:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := run(t, Docker2VM(), tc.args...)
			if code != 1 || out != "" || !strings.Contains(errs, tc.want) {
				t.Errorf("exit %d stdout %q stderr %q; want %q", code, out, errs, tc.want)
			}
		})
	}
	if code, out, _ := run(t, Docker2VM(), "version"); code != 0 || !strings.HasPrefix(out, "docker2vm ") {
		t.Errorf("version: %d %q", code, out)
	}
}

// TestCompletionScripts runs each shell on its script: the syntax, and
// what it completes, for all three commands.
func TestCompletionScripts(t *testing.T) {
	script := func(shell string) string {
		code, out, errs := run(t, Docker2VM(), "completion", shell)
		if code != 0 {
			t.Fatalf("completion %s: %s", shell, errs)
		}
		p := filepath.Join(t.TempDir(), "c."+shell)
		os.WriteFile(p, []byte(out), 0o644)
		return p
	}
	t.Run("bash", func(t *testing.T) {
		bash := require.Tool(t, "bash")
		p := script("bash")
		for _, tc := range []struct{ line, want string }{
			{"oci2gondolin --mo", "--mode"},
			{"oci2gondolin --mode ''", "rootfs assets"},
			{"oci2gondolin --rootfs-mode ''", "cow memory readonly"},
			{"dockerfile2gondolin --plat", "--platform"},
			{"docker2vm ''", "cache completion version"},
			{"docker2vm cache p", "prune"},
			{"docker2vm --cache-dir /tmp cache du --j", "--json"},
			{"docker2vm completion ''", "bash zsh fish"},
			{"oci2gondolin --platform = ''", "linux/amd64 linux/arm64"},
			{"oci2gondolin --platform = linux/a", "linux/amd64"},
			{"dockerfile2gondolin --builder ''", "docker-buildx buildctl"},
			{"dockerfile2gondolin --network ''", "default none host"},
		} {
			words := strings.Fields(tc.line)
			cmd := exec.Command(bash, "-c", `source "$1"; eval "COMP_WORDS=($2)"; COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _d2v_${COMP_WORDS[0]}; echo "${COMPREPLY[*]}"`, "x", p, tc.line)
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), tc.want) {
				t.Errorf("%q (%d words): %q %v, want %q", tc.line, len(words), out, err, tc.want)
			}
		}
	})
	t.Run("bash: names with spaces", func(t *testing.T) {
		bash := require.Tool(t, "bash")
		p := script("bash")
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "my image.tar"), nil, 0o644)
		for _, words := range []string{"oci2gondolin --oci-tar %q", "oci2gondolin --oci-tar = %q"} {
			line := fmt.Sprintf(words, filepath.Join(dir, "my"))
			out, err := exec.Command(bash, "-c", `source "$1"; eval "COMP_WORDS=($2)"; COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _d2v_${COMP_WORDS[0]}; printf '%s\n' "${COMPREPLY[@]}"`, "x", p, line).CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != filepath.Join(dir, "my image.tar") {
				t.Errorf("%s: %q %v, want the one name %q", line, out, err, filepath.Join(dir, "my image.tar"))
			}
		}
	})
	t.Run("zsh", func(t *testing.T) {
		zsh := require.Tool(t, "zsh")
		if out, err := exec.Command(zsh, "-n", script("zsh")).CombinedOutput(); err != nil {
			t.Errorf("zsh -n: %v\n%s", err, out)
		}
	})
	t.Run("fish", func(t *testing.T) {
		fish := require.Tool(t, "fish")
		p := script("fish")
		if out, err := exec.Command(fish, "--no-execute", p).CombinedOutput(); err != nil {
			t.Fatalf("fish --no-execute: %v\n%s", err, out)
		}
		for _, tc := range []struct{ line, want string }{
			{"oci2gondolin --mode ", "rootfs"},
			{"docker2vm cache ", "prune"},
			{"docker2vm completion ", "zsh"},
			{"docker2vm cache prune --", "--keep-storage"},
		} {
			out, err := exec.Command(fish, "-c", "source $argv[1]; complete -C $argv[2]", p, tc.line).CombinedOutput()
			if err != nil || !strings.Contains(string(out), tc.want) {
				t.Errorf("%q: %q %v, want %q", tc.line, out, err, tc.want)
			}
		}
	})
}

// TestManPages: every command's page names every flag it accepts, and
// man renders it.
func TestManPages(t *testing.T) {
	for _, c := range Commands() {
		page := cli.Man(c, "2026-01-01")
		for _, n := range append([]*cli.Command{c}, subs(c)...) {
			for _, f := range n.Flags {
				if !f.Hidden && !strings.Contains(page, `\-\-`+strings.ReplaceAll(f.Name, "-", `\-`)) {
					t.Errorf("%s(1) lacks --%s", c.Name, f.Name)
				}
			}
		}
		for _, sec := range []string{".SH EXAMPLES", ".SH EXIT STATUS", ".SH ENVIRONMENT", ".TP\n130\n"} {
			if !strings.Contains(page, sec) {
				t.Errorf("%s(1) lacks %q", c.Name, sec)
			}
		}
		if c.Name != "docker2vm" {
			for _, env := range []string{"GONDOLIN_GUEST_DIR", "GONDOLIN_IMAGE_STORE", "DOCKER2VM_STALL_TIMEOUT", "SOURCE_DATE_EPOCH"} {
				if !strings.Contains(page, env) {
					t.Errorf("%s(1) does not list %s", c.Name, env)
				}
			}
		}
		if manBin, err := exec.LookPath("man"); err == nil {
			p := filepath.Join(t.TempDir(), c.Name+".1")
			os.WriteFile(p, []byte(page), 0o644)
			cmd := exec.Command(manBin, "-l", p)
			cmd.Env = append(os.Environ(), "MANPAGER=cat", "MANWIDTH=100")
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "NAME") || !strings.Contains(string(out), "EXIT STATUS") {
				t.Errorf("man -l %s: %v\n%s", c.Name, err, out)
			}
			for _, e := range c.Examples {
				if first, _, _ := strings.Cut(e.Command, "\n"); !strings.Contains(string(out), first) {
					t.Errorf("man %s does not show the example %q:\n%s", c.Name, first, out)
				}
			}
		}
	}
}

func subs(c *cli.Command) []*cli.Command {
	var out []*cli.Command
	for _, s := range c.Subs {
		out = append(out, s)
		out = append(out, subs(s)...)
	}
	return out
}
