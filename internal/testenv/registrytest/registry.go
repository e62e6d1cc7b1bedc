// Package registrytest runs the real registry server (Debian's
// docker-registry, distribution 2.8) for the tests that pull from and push
// to a registry, optionally behind basic auth.
package registrytest

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/testenv"
)

// Binary is the Debian docker-registry server (distribution 2.8).
const Binary = "/usr/bin/docker-registry"

// Options configure Start.
type Options struct {
	// Username and Password, when set, turn on htpasswd basic auth.
	Username, Password string
}

// Server is a running registry server.
type Server struct {
	// Host is "127.0.0.1:PORT".
	Host string
	// Root is the storage root directory (storage.filesystem.rootdirectory).
	Root     string
	Username string
	Password string
	cmd      *exec.Cmd
	log      *bytes.Buffer
}

// Start starts the real registry server on a free loopback port,
// storing into a temporary directory, and stops it when the test ends.
func Start(t testenv.TB, opts Options) *Server {
	t.Helper()
	require.Integration(t, "starts a registry")
	bin := require.Tool(t, Binary)
	dir := t.TempDir()
	root := filepath.Join(dir, "storage")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	port := testenv.FreePort(t)
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
	r := &Server{Host: host, Root: root, Username: opts.Username, Password: opts.Password, log: &bytes.Buffer{}}
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
func writeHtpasswd(t testenv.TB, path, user, pass string) {
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
func (r *Server) DockerConfig(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte(r.Username + ":" + r.Password))
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, r.Host, auth)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
	return dir
}

// BlobPath is where the registry stores a blob (layers, configs and
// manifests alike), for tampering tests.
func (r *Server) BlobPath(hex string) string {
	return filepath.Join(r.Root, "docker", "registry", "v2", "blobs", "sha256", hex[:2], hex, "data")
}

// Ref returns HOST/repo.
func (r *Server) Ref(repo string) string { return r.Host + "/" + strings.TrimPrefix(repo, "/") }

// Push writes an image or index to the registry as repo:tag, with basic
// auth when the registry has credentials. It returns the reference.
func (r *Server) Push(t testenv.TB, repoTag string, img v1.Image, idx v1.ImageIndex) string {
	t.Helper()
	ref, err := name.ParseReference(r.Ref(repoTag), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	opts := []remote.Option{}
	if r.Username != "" {
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: r.Username, Password: r.Password}))
	}
	if img != nil {
		err = remote.Write(ref, img, opts...)
	} else {
		err = remote.WriteIndex(ref, idx, opts...)
	}
	if err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	return ref.String()
}
