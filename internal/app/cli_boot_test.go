//go:build linux

package app

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/docker2vm/docker2vm/internal/testenv"
	"github.com/docker2vm/docker2vm/internal/testenv/gondolintest"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
)

// TestGondolinCLI runs converted guests with the gondolin CLI as its users
// do (it always has Gondolin's filesystem on): the original docker2vm
// README's example word for word, an image imported with --tag, one pulled
// from a registry --publish wrote and served over HTTP, and `gondolin bash`
// typed into a terminal exactly as the line oci2gondolin prints says.
func TestGondolinCLI(t *testing.T) {
	reg, base := bootPrereqs(t, testenv.AMD64)
	ref := reg.Push(t, "busybox:cli", imagetest.Busybox(t, gondolintest.BaseBusybox(t, base)), nil)

	t.Run("GONDOLIN_GUEST_DIR", func(t *testing.T) {
		out := convertAssets(t, testenv.AMD64, ref, base)
		got, err := gondolintest.RunCLI(t, gondolintest.CLIOptions{Env: []string{"GONDOLIN_GUEST_DIR=" + out}},
			"exec", "--", "/bin/busybox", "echo", "hello")
		if err != nil || !strings.Contains(got, "hello\n") {
			t.Fatalf("GONDOLIN_GUEST_DIR=%s gondolin exec -- /bin/busybox echo hello: %v\n%s", out, err, got)
		}
	})

	store := t.TempDir()
	t.Setenv("GONDOLIN_IMAGE_STORE", store)
	publish := t.TempDir()
	out := filepath.Join(t.TempDir(), "guest")
	code, _, stderr := run(t, OCI2Gondolin(), "--image", ref, "--platform", "linux/amd64", "--mode", "assets", "--base", base,
		"--out", out, "--no-cache", "--progress", "plain", "--tag", "d2v-cli:1", "--publish", publish)
	if code != 0 {
		t.Fatalf("oci2gondolin --tag --publish: exit %d\n%s", code, stderr)
	}
	storeEnv := []string{"GONDOLIN_IMAGE_STORE=" + store}

	t.Run("exec --image", func(t *testing.T) {
		got, err := gondolintest.RunCLI(t, gondolintest.CLIOptions{Env: storeEnv}, "exec", "--image", "d2v-cli:1", "--", "/usr/bin/docker2vm-entrypoint", "from", "the", "cli")
		if err != nil || !strings.Contains(got, "app says hello busybox from /srv as 0 with from the cli") {
			t.Fatalf("gondolin exec --image d2v-cli:1: %v\n%s", err, got)
		}
	})

	t.Run("image pull", func(t *testing.T) {
		srv := httptest.NewServer(http.FileServer(http.Dir(publish)))
		t.Cleanup(srv.Close)
		env := []string{"GONDOLIN_IMAGE_STORE=" + t.TempDir(), "GONDOLIN_IMAGE_REGISTRY_URL=" + srv.URL + "/builtin-image-registry.json"}
		got, err := gondolintest.RunCLI(t, gondolintest.CLIOptions{Env: env}, "image", "pull", "d2v-cli:1")
		if err != nil {
			t.Fatalf("gondolin image pull d2v-cli:1: %v\n%s", err, got)
		}
		got, err = gondolintest.RunCLI(t, gondolintest.CLIOptions{Env: env}, "exec", "--image", "d2v-cli:1", "--", "/bin/busybox", "echo", "pulled")
		if err != nil || !strings.Contains(got, "pulled\n") {
			t.Fatalf("gondolin exec --image d2v-cli:1 after the pull: %v\n%s", err, got)
		}
	})

	t.Run("bash as printed", func(t *testing.T) {
		m := regexp.MustCompile(`Boot it: (gondolin bash --image \S+) `).FindStringSubmatch(stderr)
		if m == nil {
			t.Fatalf("oci2gondolin printed no `gondolin bash` line:\n%s", stderr)
		}
		words := strings.Fields(m[1])
		got, err := gondolintest.RunCLI(t, gondolintest.CLIOptions{Env: storeEnv, Terminal: true, Input: "echo d2v-$((6 * 7)) in $PWD\nexit\n"}, words[1:]...)
		if err != nil || !strings.Contains(got, "d2v-42 in ") {
			t.Fatalf("%s in a terminal: %v\n%s", m[1], err, got)
		}
	})

	t.Run("arm64", func(t *testing.T) {
		reg, base := bootPrereqs(t, testenv.ARM64)
		ref := reg.Push(t, "busybox:cli-arm64", imagetest.Busybox(t, gondolintest.BaseBusybox(t, base)), nil)
		out := convertAssets(t, testenv.ARM64, ref, base)
		got, err := gondolintest.RunCLI(t, gondolintest.CLIOptions{Arch: testenv.ARM64, Env: []string{"GONDOLIN_GUEST_DIR=" + out}},
			"exec", "--", "/bin/busybox", "uname", "-m")
		if err != nil || !strings.Contains(got, "aarch64\n") {
			t.Fatalf("gondolin exec of an arm64 guest: %v\n%s", err, got)
		}
	})
}
