//go:build linux

package guestenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/docker2vm/docker2vm/internal/require"
)

// inNamespace runs the test again in a child process with a mount
// namespace of its own (so that its mounts vanish with it), returning true
// in the child, where the test goes on; the parent waits and reports.
func inNamespace(t *testing.T) bool {
	t.Helper()
	if os.Getenv("GUESTENV_TEST_CHILD") == t.Name() {
		return true
	}
	require.Root(t, "to mount tmpfs and overlays in a mount namespace")
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v")
	cmd.Env = append(os.Environ(), "GUESTENV_TEST_CHILD="+t.Name())
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("in a mount namespace: %v\n%s", err, out)
	}
	t.Logf("in a mount namespace:\n%s", out)
	return false
}

// scratchRoot is a directory with /dev, whose mounts are undone when the
// test ends (before its removal).
func scratchRoot(t *testing.T) string {
	root := t.TempDir()
	t.Cleanup(func() {
		for i := 0; i < 20 && unix.Unmount(root, unix.MNT_DETACH) == nil; i++ {
		}
		mounts, _ := readMounts()
		for i := len(mounts) - 1; i >= 0; i-- {
			if strings.HasPrefix(mounts[i].Point, root+"/") {
				_ = unix.Unmount(mounts[i].Point, unix.MNT_DETACH)
			}
		}
	})
	if err := os.Mkdir(root+"/dev", 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

// hasCap reports whether the process has capability c in effect.
func hasCap(t *testing.T, c int) bool {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			var caps uint64
			fmt.Sscanf(strings.TrimSpace(v), "%x", &caps)
			return caps&(1<<uint(c)) != 0
		}
	}
	return false
}

func mustWrite(t *testing.T, p, data string, uid int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(p, uid, uid); err != nil {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestUncover builds a root filesystem, covers its directories with tmpfs
// as Gondolin's init does (one already holding a file of Gondolin's), and
// checks that Uncover shows the image's files again, writable, with
// Gondolin's file still there and writes landing in the tmpfs.
func TestUncover(t *testing.T) {
	if !inNamespace(t) {
		return
	}
	root := scratchRoot(t)
	if err := unix.Mount(root, root, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, root+"/var/log/nginx/access.log", "image log\n", 101)
	mustWrite(t, root+"/run/postgresql/.keep", "", 70)
	if err := os.Lchown(root+"/run/postgresql", 70, 70); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, root+"/root/.profile", "profile\n", 0)
	if err := os.Chmod(root+"/root", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(root+"/var/cache", 0o755); err != nil { // empty in the image
		t.Fatal(err)
	}
	for _, d := range []string{"/var/log", "/run", "/root", "/var/cache"} {
		if err := unix.Mount("tmpfs", root+d, "tmpfs", 0, ""); err != nil {
			t.Fatal(err)
		}
	}
	mustWrite(t, root+"/run/sandboxfs.ready", "ok\n", 0) // Gondolin's own
	if _, err := os.Stat(root + "/var/log/nginx"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the tmpfs does not hide the image's files: %v", err)
	}

	var logs []string
	g := &Guest{Root: root, Logf: func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) }}
	if err := g.Uncover(); err != nil {
		t.Fatalf("Uncover: %v (%v)", err, logs)
	}
	if got := mustRead(t, root+"/var/log/nginx/access.log"); got != "image log\n" {
		t.Fatalf("access.log = %q", got)
	}
	if got := mustRead(t, root+"/run/sandboxfs.ready"); got != "ok\n" {
		t.Fatalf("Gondolin's file = %q", got)
	}
	var st unix.Stat_t
	if err := unix.Stat(root+"/run/postgresql", &st); err != nil || st.Uid != 70 {
		t.Fatalf("/run/postgresql: %v, uid %d", err, st.Uid)
	}
	if err := unix.Stat(root+"/root", &st); err != nil || st.Mode&0o7777 != 0o700 {
		t.Fatalf("/root mode %o (%v)", st.Mode&0o7777, err)
	}
	// Writable, and the writes go to the tmpfs, not to the image.
	f, err := os.OpenFile(root+"/var/log/nginx/access.log", os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("guest log\n")
	f.Close()
	mustWrite(t, root+"/var/log/new.log", "new\n", 0)
	var fs unix.Statfs_t
	if err := unix.Statfs(root+"/var/log", &fs); err != nil || fs.Type != unix.OVERLAYFS_SUPER_MAGIC {
		t.Fatalf("/var/log is not an overlay (%x, %v)", fs.Type, err)
	}
	// The image's own directory, seen without the mounts, is unchanged.
	if err := os.Mkdir(root+"/.peek", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(root, root+"/.peek", "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, root+"/.peek/var/log/nginx/access.log"); got != "image log\n" {
		t.Fatalf("the image's file changed: %q", got)
	}
	if _, err := os.Stat(root + "/.peek/var/log/new.log"); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a write reached the image")
	}
	// A directory the image left empty keeps its plain tmpfs.
	if err := unix.Statfs(root+"/var/cache", &fs); err != nil || fs.Type != unix.TMPFS_MAGIC {
		t.Fatalf("/var/cache is not a tmpfs (%x, %v)", fs.Type, err)
	}
	// Nothing is left in /dev of the root.
	if _, err := os.Stat(root + "/dev/.docker2vm-rootfs"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the bind mount's directory is left: %v", err)
	}
	if len(logs) != 1 || !strings.Contains(logs[0], "/run, ") || strings.Contains(logs[0], "/var/cache") {
		t.Fatalf("logs: %v", logs)
	}
}

// TestDevicesAndLimits checks the /dev entries and RLIMIT_NOFILE in a
// fake root's /dev.
func TestDevicesAndLimits(t *testing.T) {
	if !inNamespace(t) {
		return
	}
	root := scratchRoot(t)
	if err := os.Symlink("/somewhere", root+"/dev/stdout"); err != nil { // an existing entry is kept
		t.Fatal(err)
	}
	g := &Guest{Root: root, Logf: t.Logf}
	if err := g.Devices(); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/somewhere", "stderr": "/proc/self/fd/2", "core": "/proc/kcore", "ptmx": "pts/ptmx"} {
		if got, err := os.Readlink(root + "/dev/" + name); err != nil || got != want {
			t.Errorf("/dev/%s -> %q (%v), want %q", name, got, err, want)
		}
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(root+"/dev/shm", &fs); err != nil || fs.Type != unix.TMPFS_MAGIC || fs.Blocks*uint64(fs.Bsize) != Shm {
		t.Fatalf("/dev/shm: %+v (%v)", fs, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(root+"/dev/shm", &st); err != nil || st.Mode&0o7777 != 0o1777 {
		t.Fatalf("/dev/shm mode %o", st.Mode&0o7777)
	}
	// A second run changes nothing and fails on nothing.
	if err := g.Devices(); err != nil {
		t.Fatal(err)
	}
	if err := Rlimits(); err != nil {
		if errors.Is(err, unix.EPERM) && !hasCap(t, unix.CAP_SYS_RESOURCE) {
			// A container that withholds the capability (as this
			// sandbox may): the boot tests check the limit in a guest.
			t.Logf("RLIMIT_NOFILE not raised without CAP_SYS_RESOURCE: %v", err)
			return
		}
		t.Fatal(err)
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Cur != NoFile || lim.Max != NoFile {
		t.Fatalf("RLIMIT_NOFILE %+v (%v)", lim, err)
	}
}
