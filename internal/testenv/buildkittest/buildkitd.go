// Package buildkittest runs a real BuildKit daemon for the integration
// tests of dockerfile2gondolin and of the build paths. buildkitd and
// buildctl are built from the Go module graph by tools/buildkit/build.sh
// (a separate module, so that buildkit stays out of our go.mod) and cached
// in testenv.CacheDir()/buildkit-<version>/. The daemon runs as root with
// the OCI worker (runc, overlayfs). It also sets up docker buildx with a
// builder that uses the daemon.
package buildkittest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker2vm/docker2vm/internal/mountinfo"
	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/testenv"
)

// Packages are the Debian packages Start needs besides Go.
const Packages = "runc util-linux"

// Options configure Start.
type Options struct {
	// TCP also listens on tcp://127.0.0.1:PORT (no TLS), as a remote
	// BuildKit would.
	TCP bool
	// InsecureRegistries are HOST:PORT registries buildkitd pulls from (and
	// pushes to) over plain HTTP, e.g. a test registry's Host.
	InsecureRegistries []string
}

// Daemon is a running buildkitd.
type Daemon struct {
	// Addr is unix:///.../buildkitd.sock.
	Addr string
	// TCPAddr is tcp://127.0.0.1:PORT when Options.TCP is set.
	TCPAddr string
	// Buildctl is the buildctl binary of the same version; BinDir holds it
	// and buildkitd (put BinDir on PATH for code that runs "buildctl").
	Buildctl string
	BinDir   string
	// Root is the daemon's state directory; Config its buildkitd.toml.
	Root   string
	Config string

	logPath string
	cmd     *exec.Cmd
}

var (
	binMu  sync.Mutex
	binDir string
)

// Binaries returns the directory holding buildkitd and buildctl,
// building them the first time (about 2 minutes on 2 cores; later runs find
// them in the cache). It skips the test when Go or bash is missing, except
// under CI, where it fails.
func Binaries(t testenv.TB) string {
	t.Helper()
	require.Integration(t, "builds buildkitd and buildctl")
	tools := require.Tools(t, "golang bash util-linux", "go", "bash", "flock")
	binMu.Lock()
	defer binMu.Unlock()
	if binDir != "" {
		return binDir
	}
	script, err := buildScript()
	if err != nil {
		t.Fatalf("buildkittest.Binaries: %v", err)
	}
	start := time.Now()
	cmd := exec.Command(tools["bash"], script)
	cmd.Dir = filepath.Dir(script)
	cmd.Env = append(os.Environ(),
		"DOCKER2VM_TEST_CACHE="+testenv.CacheDir(),
		"PATH="+filepath.Dir(tools["go"])+string(os.PathListSeparator)+os.Getenv("PATH"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("building buildkitd and buildctl (%s): %v\n%s", script, err, testenv.Tail(stderr.String(), 4000))
	}
	dir := strings.TrimSpace(string(out))
	for _, b := range []string{"buildkitd", "buildctl"} {
		if st, err := os.Stat(filepath.Join(dir, b)); err != nil || st.Mode()&0o111 == 0 {
			t.Fatalf("%s did not produce %s in %q: %v\n%s", script, b, dir, err, testenv.Tail(stderr.String(), 4000))
		}
	}
	t.Logf("buildkittest.Binaries: %s (%s)", dir, time.Since(start).Round(time.Millisecond))
	binDir = dir
	return dir
}

// buildScript is tools/buildkit/build.sh in the module's sources.
func buildScript() (string, error) {
	root, err := testenv.ModuleRoot("go")
	if err != nil {
		return "", err
	}
	p := filepath.Join(root, "tools", "buildkit", "build.sh")
	if _, err := os.Stat(p); err != nil {
		return "", errors.New("cannot find tools/buildkit/build.sh next to the docker2vm sources")
	}
	return p, nil
}

// Start builds (cached) and starts buildkitd as root with the OCI
// worker, host networking and its state in a temporary directory, waits
// until `buildctl debug workers` answers, and stops it when the test ends
// (SIGTERM, then SIGKILL; leftover mounts under its root are detached). It
// skips the test when not root or runc is missing, except under CI,
// where it fails.
func Start(t testenv.TB, opts Options) *Daemon {
	t.Helper()
	require.Integration(t, "runs buildkitd")
	require.Root(t, "for buildkitd with the OCI worker")
	tools := require.Tools(t, Packages, "runc")
	bin := Binaries(t)

	state := t.TempDir()
	// A unix socket path must stay under 108 bytes; t.TempDir() holds the
	// test name, so the socket gets a short directory of its own.
	tmp := os.TempDir()
	if len(tmp) > 64 {
		tmp = "/tmp"
	}
	sockDir, err := os.MkdirTemp(tmp, "bk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	b := &Daemon{
		Addr:     "unix://" + filepath.Join(sockDir, "buildkitd.sock"),
		Buildctl: filepath.Join(bin, "buildctl"),
		BinDir:   bin,
		Root:     filepath.Join(state, "root"),
		Config:   filepath.Join(state, "buildkitd.toml"),
		logPath:  filepath.Join(state, "buildkitd.log"),
	}
	addrs := []string{b.Addr}
	if opts.TCP {
		b.TCPAddr = fmt.Sprintf("tcp://127.0.0.1:%d", testenv.FreePort(t))
		addrs = append(addrs, b.TCPAddr)
	}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "root = %q\n\n[grpc]\n  address = [", b.Root)
	for i, a := range addrs {
		if i > 0 {
			cfg.WriteString(", ")
		}
		fmt.Fprintf(&cfg, "%q", a)
	}
	cfg.WriteString("]\n\n")
	fmt.Fprintf(&cfg, "[otel]\n  socketPath = %q\n\n", filepath.Join(sockDir, "otel.sock"))
	cfg.WriteString("[worker.oci]\n  enabled = true\n  networkMode = \"host\"\n  gc = false\n\n")
	cfg.WriteString("[worker.containerd]\n  enabled = false\n")
	for _, r := range opts.InsecureRegistries {
		fmt.Fprintf(&cfg, "\n[registry.%q]\n  http = true\n  insecure = true\n", r)
	}
	if err := os.WriteFile(b.Config, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(b.logPath)
	if err != nil {
		t.Fatal(err)
	}
	// buildkitd runs runc by name: the PATH it sees must hold it.
	path := filepath.Dir(tools["runc"]) + string(os.PathListSeparator) + os.Getenv("PATH")
	b.cmd = exec.Command(filepath.Join(bin, "buildkitd"), "--config", b.Config)
	b.cmd.Env = append(os.Environ(), "PATH="+path)
	b.cmd.Stdout, b.cmd.Stderr = logf, logf
	// Its own process group, and killed if the test binary dies first.
	b.cmd.SysProcAttr = testenv.ChildProcAttr()
	start := time.Now()
	if err := b.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("starting buildkitd: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- b.cmd.Wait(); logf.Close() }()
	t.Cleanup(func() {
		b.stop(t, exited)
		if t.Failed() {
			t.Logf("buildkitd config:\n%s\nbuildkitd log:\n%s", cfg.String(), testenv.Tail(b.Log(), 8000))
		}
	})

	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			t.Fatalf("buildkitd exited early: %v\n%s", err, testenv.Tail(b.Log(), 4000))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, b.Buildctl, "--addr", b.Addr, "debug", "workers").CombinedOutput()
		cancel()
		if err == nil && strings.Contains(string(out), "linux/") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("buildkitd did not answer `buildctl debug workers` within 60s: %v\n%s\nlog:\n%s", err, out, testenv.Tail(b.Log(), 4000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("buildkitd ready at %s %s (%s)", b.Addr, b.TCPAddr, time.Since(start).Round(time.Millisecond))
	return b
}

// Log returns what buildkitd has logged so far.
func (b *Daemon) Log() string {
	data, _ := os.ReadFile(b.logPath)
	return string(data)
}

// PutOnPath prepends BinDir to PATH for the rest of the test (t.Setenv: not
// for parallel tests), so that code running "buildctl" finds this one.
func (b *Daemon) PutOnPath(t *testing.T) {
	t.Helper()
	t.Setenv("PATH", b.BinDir+string(os.PathListSeparator)+os.Getenv("PATH"))
}

func (b *Daemon) stop(t testenv.TB, exited chan error) {
	t.Helper()
	pid := b.cmd.Process.Pid
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		t.Errorf("buildkitd (pid %d) ignored SIGTERM for 15s; killing it", pid)
		// Its process group: buildkitd and any runc it left behind.
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-exited
	}
	// Processes of its group still alive (a runc container, a shim).
	if err := syscall.Kill(-pid, 0); err == nil {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	// Mounts (overlayfs snapshots, runc rootfs) left under its root would
	// make t.TempDir's removal fail and leak into the host.
	if left := mountsUnder(b.Root); len(left) > 0 {
		for _, m := range left {
			if err := testenv.UnmountDetach(m); err != nil {
				t.Errorf("unmounting %s left by buildkitd: %v", m, err)
			}
		}
		t.Logf("buildkitd left %d mounts under %s; detached them", len(left), b.Root)
	}
}

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	mounts, err := mountinfo.Read()
	if err != nil {
		return nil
	}
	return mountinfo.Under(mounts, dir)
}

// DockerBuildx finds the docker CLI and its buildx plugin
// (scripts/install-deps.sh installs the plugin from Debian sid) and returns
// a fresh DOCKER_CONFIG directory from which docker sees the plugin:
// builders a test creates there go away with it, and the user's own are
// never touched. Run docker with DOCKER_CONFIG set to it. No Docker engine
// is needed for builders with the remote driver (see
// Daemon.BuildxBuilder). It skips the test when the CLI or the plugin
// is missing, except under CI=true, where it fails.
func DockerBuildx(t testenv.TB) string {
	t.Helper()
	docker := require.Tools(t, "docker.io (the docker CLI)", "docker")["docker"]
	cfg := t.TempDir()
	// docker looks for plugins in DOCKER_CONFIG/cli-plugins and in system
	// directories (/usr/local/lib/docker/cli-plugins, ...); one installed
	// in the user's own config directory is linked into the new one.
	home := os.Getenv("DOCKER_CONFIG")
	if home == "" {
		if h, err := os.UserHomeDir(); err == nil {
			home = filepath.Join(h, ".docker")
		}
	}
	if p := filepath.Join(home, "cli-plugins", "docker-buildx"); home != "" && fileExists(p) {
		if err := os.MkdirAll(filepath.Join(cfg, "cli-plugins"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(p, filepath.Join(cfg, "cli-plugins", "docker-buildx")); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, docker, "buildx", "version")
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+cfg)
	out, err := cmd.CombinedOutput()
	if err != nil {
		require.Missing(t, "the docker buildx plugin does not run (scripts/install-deps.sh installs docker-buildx): %v\n%s", err, out)
	}
	t.Logf("buildkittest.DockerBuildx: %s", strings.TrimSpace(string(out)))
	return cfg
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// BuildxBuilder creates the docker buildx builder name, with the remote
// driver, that builds with this buildkitd (no Docker engine involved), in
// the docker config directory dockerConfig (from DockerBuildx).
func (b *Daemon) BuildxBuilder(t testenv.TB, dockerConfig, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", "buildx", "create", "--name", name, "--driver", "remote", b.Addr)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+dockerConfig)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker buildx create --name %s --driver remote %s: %v\n%s", name, b.Addr, err, out)
	}
}
