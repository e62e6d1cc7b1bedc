package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker2vm/docker2vm/internal/require"
)

// RegistryBinary is the Debian docker-registry server (distribution 2.8).
const RegistryBinary = "/usr/bin/docker-registry"

// RegistryOptions configure StartRegistry.
type RegistryOptions struct {
	// Username and Password, when set, turn on htpasswd basic auth.
	Username, Password string
}

// Registry is a running registry server.
type Registry struct {
	// Host is "127.0.0.1:PORT".
	Host string
	// Root is the storage root directory (storage.filesystem.rootdirectory).
	Root     string
	Username string
	Password string
	cmd      *exec.Cmd
	log      *bytes.Buffer
}

// StartRegistry starts the real registry server on a free loopback port,
// storing into a temporary directory, and stops it when the test ends.
func StartRegistry(t TB, opts RegistryOptions) *Registry {
	t.Helper()
	require.Integration(t, "starts a registry")
	bin := require.Tool(t, RegistryBinary)
	dir := t.TempDir()
	root := filepath.Join(dir, "storage")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	port := FreePort(t)
	host := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  redirect:
    disable: true
http:
  addr: %s
  secret: docker2vm-test-secret
`, root, host)
	if opts.Username != "" {
		htpasswd := filepath.Join(dir, "htpasswd")
		writeHtpasswd(t, htpasswd, opts.Username, opts.Password)
		cfg += fmt.Sprintf("auth:\n  htpasswd:\n    realm: docker2vm-test\n    path: %s\n", htpasswd)
	}
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &Registry{Host: host, Root: root, Username: opts.Username, Password: opts.Password, log: &bytes.Buffer{}}
	r.cmd = exec.Command(bin, "serve", cfgPath)
	r.cmd.Stdout = r.log
	r.cmd.Stderr = r.log
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- r.cmd.Wait() }()
	t.Cleanup(func() {
		r.cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("registry log:\n%s", r.log.String())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case err := <-exited:
			t.Fatalf("registry exited early: %v\n%s", err, r.log.String())
		default:
		}
		resp, err := http.Get("http://" + host + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry at %s did not answer /v2/ within 15s: %v\n%s", host, err, r.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return r
}

// writeHtpasswd makes a bcrypt htpasswd file with the htpasswd tool
// (apache2-utils).
func writeHtpasswd(t TB, path, user, pass string) {
	t.Helper()
	bin := require.Tool(t, "htpasswd")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-Bbn", user, pass).Output()
	if err != nil {
		t.Fatalf("htpasswd: %v", err)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

// DockerConfig writes a Docker config.json with an "auths" entry for the
// registry's credentials into a new directory and points DOCKER_CONFIG at
// it for the rest of the test (t.Setenv: not for parallel tests).
func (r *Registry) DockerConfig(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	auth := base64Std(r.Username + ":" + r.Password)
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, r.Host, auth)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
	return dir
}

// BlobPath is where the registry stores a blob (layers, configs and
// manifests alike), for tampering tests.
func (r *Registry) BlobPath(hex string) string {
	return filepath.Join(r.Root, "docker", "registry", "v2", "blobs", "sha256", hex[:2], hex, "data")
}

// Ref returns HOST/repo.
func (r *Registry) Ref(repo string) string { return r.Host + "/" + strings.TrimPrefix(repo, "/") }
