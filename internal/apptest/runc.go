//go:build linux

package apptest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"golang.org/x/sys/unix"

	"github.com/docker2vm/docker2vm/internal/require"
)

// dockerPath is the PATH Docker gives a container whose image sets none.
const dockerPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// dockerCaps are the capabilities Docker gives a container by default.
var dockerCaps = []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"}

// NoFile is RLIMIT_NOFILE as Docker sets it (and the guest: see package
// guestenv).
const NoFile = 1048576

// RunRunc runs app's image from the OCI archive under runc the way Docker
// does (`docker run -d -e ... IMAGE`): unpacked by umoci, with Docker's
// /etc/hosts, /etc/hostname and /etc/resolv.conf mounted, its
// capabilities, RLIMIT_NOFILE, /dev/shm and a network namespace of its own
// whose loopback is up, and hostname as its host name. It runs the checks
// with `runc exec` as root and returns what they and the service printed.
func RunRunc(t *testing.T, ociTar string, app App, hostname string, checks []Check) *Observation {
	t.Helper()
	require.Root(t, "to run containers with runc")
	tools := require.Tools(t, "runc umoci", "runc", "umoci", "tar")
	dir := t.TempDir()
	layout := filepath.Join(dir, "layout")
	if err := os.Mkdir(layout, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(tools["tar"], "-xf", ociTar, "-C", layout).CombinedOutput(); err != nil {
		t.Fatalf("tar -xf %s: %v\n%s", ociTar, err, out)
	}
	bundle := filepath.Join(dir, "bundle")
	if out, err := exec.Command(tools["umoci"], "unpack", "--image", layout+":latest", bundle).CombinedOutput(); err != nil {
		t.Fatalf("umoci unpack: %v\n%s", err, out)
	}
	etc := filepath.Join(dir, "etc")
	if err := os.Mkdir(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	resolv, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		resolv = nil
	}
	for name, data := range map[string]string{
		"hosts":       "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n127.0.1.1\t" + hostname + "\n",
		"hostname":    hostname + "\n",
		"resolv.conf": string(resolv),
	} {
		if err := os.WriteFile(filepath.Join(etc, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	nofile := uint64(NoFile)
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err == nil && lim.Max < nofile && !canRaiseLimits() {
		// A test host that withholds CAP_SYS_RESOURCE cannot give a
		// container more than its own hard limit; Compare allows that.
		nofile = lim.Max
	}
	image, err := imageEnv(layout)
	if err != nil {
		t.Fatal(err)
	}
	if err := dockerize(filepath.Join(bundle, "config.json"), etc, hostname, image, app.Env, nofile); err != nil {
		t.Fatal(err)
	}

	state := filepath.Join(dir, "state")
	id := fmt.Sprintf("d2v-%s-%d", app.Name, time.Now().UnixNano())
	runc := func(args ...string) *exec.Cmd {
		return exec.Command(tools["runc"], append([]string{"--root", state}, args...)...)
	}
	logPath := filepath.Join(dir, "service.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := runc("run", "--detach", "--bundle", bundle, id)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Run(); err != nil {
		log, _ := os.ReadFile(logPath)
		t.Fatalf("runc run %s: %v\n%s", app.Name, err, log)
	}
	t.Cleanup(func() {
		_ = runc("kill", id, "KILL").Run()
		_ = runc("delete", "--force", id).Run()
	})

	obs := &Observation{Checks: map[string]Result{}}
	for _, c := range checks {
		var stdout, stderr bytes.Buffer
		// As root with what `docker exec --privileged` would add to read
		// another user's /proc entries.
		cmd := runc(append([]string{"exec", "--user", "0:0", "--cap", "CAP_SYS_PTRACE", id}, c.Argv...)...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("runc exec %s: %v", c.Name, err)
		}
		out := stdout.String()
		if nofile != NoFile {
			// What Docker would have given, on a host that can grant it.
			granted := fmt.Sprintf("nofile %d %d\n", nofile, nofile)
			if strings.Contains(out, granted) {
				t.Logf("%s: the container got RLIMIT_NOFILE %d, this host's limit; compared as Docker's %d", c.Name, nofile, NoFile)
				out = strings.ReplaceAll(out, granted, fmt.Sprintf("nofile %d %d\n", NoFile, NoFile))
			}
		}
		obs.Checks[c.Name] = Result{Code: code, Output: out, Stderr: stderr.String()}
	}
	time.Sleep(500 * time.Millisecond) // the last log lines
	log, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	obs.Log = string(log)
	return obs
}

// canRaiseLimits reports whether this process may raise a hard resource
// limit (CAP_SYS_RESOURCE).
func canRaiseLimits() bool {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			var caps uint64
			fmt.Sscanf(strings.TrimSpace(v), "%x", &caps)
			return caps&(1<<unix.CAP_SYS_RESOURCE) != 0
		}
	}
	return false
}

// imageEnv returns the ENV of the one image in an OCI layout.
func imageEnv(dir string) ([]string, error) {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	if len(m.Manifests) != 1 {
		return nil, fmt.Errorf("%s holds %d images, want 1", dir, len(m.Manifests))
	}
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	return cf.Config.Env, nil
}

// dockerize edits umoci's runtime config into what Docker's would be. The
// environment is made from the image's ENV (umoci adds TERM, which Docker
// sets only with -t).
func dockerize(path, etc, hostname string, image, env []string, nofile uint64) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var spec map[string]any
	if err := json.Unmarshal(raw, &spec); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	proc := spec["process"].(map[string]any)
	// Docker: PATH (when the image has none) and HOSTNAME, then the
	// image's ENV, then -e.
	proc["env"] = mergeEnv(mergeEnv([]string{"PATH=" + dockerPath, "HOSTNAME=" + hostname}, image), env)
	proc["terminal"] = false
	proc["rlimits"] = []any{map[string]any{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}}
	proc["capabilities"] = map[string]any{"bounding": dockerCaps, "effective": dockerCaps, "permitted": dockerCaps}
	spec["hostname"] = hostname
	root := spec["root"].(map[string]any)
	root["readonly"] = false
	mounts, _ := spec["mounts"].([]any)
	for _, name := range []string{"hosts", "hostname", "resolv.conf"} {
		mounts = append(mounts, map[string]any{"destination": "/etc/" + name, "type": "bind",
			"source": filepath.Join(etc, name), "options": []string{"rbind", "rprivate"}})
	}
	spec["mounts"] = mounts
	linux := spec["linux"].(map[string]any)
	var ns []any
	have := map[string]bool{}
	for _, n := range linux["namespaces"].([]any) {
		typ := n.(map[string]any)["type"].(string)
		if typ == "user" {
			continue // Docker runs without one by default
		}
		have[typ] = true
		ns = append(ns, n)
	}
	for _, typ := range []string{"pid", "network", "ipc", "uts", "mount"} {
		if !have[typ] {
			ns = append(ns, map[string]any{"type": typ})
		}
	}
	linux["namespaces"] = ns
	delete(linux, "uidMappings")
	delete(linux, "gidMappings")
	out, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o644)
}

// mergeEnv applies the "K=V" entries of over to base, later ones winning,
// as Docker merges a container's environment.
func mergeEnv(base, over []string) []string {
	out := append([]string{}, base...)
	for _, kv := range over {
		k, _, _ := strings.Cut(kv, "=")
		replaced := false
		for i, e := range out {
			if strings.HasPrefix(e, k+"=") {
				out[i], replaced = kv, true
			}
		}
		if !replaced {
			out = append(out, kv)
		}
	}
	return out
}
