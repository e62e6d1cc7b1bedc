//go:build linux

package guestenv

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/docker2vm/docker2vm/internal/mountinfo"
)

// Guest is the guest being prepared. Root is "/" in the guest; tests point
// it at a directory of their own (in a mount namespace of their own).
type Guest struct {
	Root string
	// Logf reports what was done and what failed.
	Logf func(format string, args ...any)
}

func (g *Guest) path(p string) string { return filepath.Join(g.Root, p) }

// Main prepares the guest and execs the agent. It returns only when the
// agent cannot be started.
func Main() int {
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, Name+": "+format+"\n", args...)
	}
	start := time.Now()
	g := &Guest{Root: "/", Logf: logf}
	took := g.Prepare()
	env := os.Environ()
	if err := g.WriteAgentEnv(env); err != nil {
		logf("%v", err)
	}
	logf("the guest is ready in %d ms (%s; built from sources %.12s); starting %s",
		time.Since(start).Milliseconds(), strings.Join(took, ", "), sourceHash, AgentPath)
	argv := append([]string{}, os.Args...)
	if len(argv) == 0 {
		argv = []string{InstallPath}
	}
	err := syscall.Exec(AgentPath, argv, env)
	logf("cannot start Gondolin's agent %s: %v", AgentPath, err)
	return 1
}

// Prepare runs every step; failures are reported through Logf. It returns
// how long each step took, "name N ms" each.
func (g *Guest) Prepare() []string {
	var took []string
	for _, step := range []struct {
		name string
		run  func() error
	}{
		{"loopback", g.Loopback},
		{"hostname", g.Hostname},
		{"/dev", g.Devices},
		{"covered directories", g.Uncover},
		{"resource limits", Rlimits},
	} {
		start := time.Now()
		if err := step.run(); err != nil {
			g.Logf("%s: %v", step.name, err)
		}
		took = append(took, fmt.Sprintf("%s %d ms", step.name, time.Since(start).Milliseconds()))
	}
	return took
}

// Loopback brings the loopback interface up; the kernel gives it 127.0.0.1
// and ::1 then.
func (g *Guest) Loopback() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("reading the flags of lo: %w", err)
	}
	flags := ifr.Uint16()
	if flags&unix.IFF_UP != 0 {
		return nil
	}
	ifr.SetUint16(flags | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bringing lo up: %w", err)
	}
	return nil
}

// Hostname sets the kernel's host name from /etc/hostname.
func (g *Guest) Hostname() error {
	data, err := os.ReadFile(g.path("/etc/hostname"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	name := Hostname(data)
	if name == "" {
		return nil
	}
	if err := unix.Sethostname([]byte(name)); err != nil {
		return fmt.Errorf("sethostname %q: %w", name, err)
	}
	return nil
}

// Devices adds what runc adds to a container's /dev and devtmpfs lacks.
func (g *Guest) Devices() error {
	var errs []error
	dev := g.path("/dev")
	for _, l := range Links {
		if err := symlinkIfMissing(l.Target, filepath.Join(dev, l.Name)); err != nil {
			errs = append(errs, err)
		}
	}
	if err := symlinkIfMissing("pts/ptmx", filepath.Join(dev, "ptmx")); err != nil {
		errs = append(errs, err)
	}
	mounts, err := readMounts()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, m := range []struct{ dir, fstype, data string }{
		{"shm", "tmpfs", fmt.Sprintf("mode=1777,size=%dk", Shm>>10)},
		{"mqueue", "mqueue", ""},
	} {
		p := filepath.Join(dev, m.dir)
		if IsMountPoint(mounts, p) {
			continue
		}
		if err := os.Mkdir(p, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			errs = append(errs, err)
			continue
		}
		if err := unix.Mount(m.dir, p, m.fstype, unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, m.data); err != nil {
			errs = append(errs, fmt.Errorf("mount %s on %s: %w", m.fstype, p, err))
		}
	}
	return errors.Join(errs...)
}

func symlinkIfMissing(target, p string) error {
	if _, err := os.Lstat(p); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := os.Symlink(target, p); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}

func readMounts() ([]Mount, error) { return mountinfo.Read() }

// Uncover makes the image's files visible again under each directory
// Gondolin's init covered with a tmpfs (see Covered), through an overlay:
// the image's directory (reached through a private bind mount of the root
// filesystem, which has no submounts) is the lower layer, the tmpfs the
// upper one. What the tmpfs held already (Gondolin's own files) moves into
// the upper layer first, so it stays where it was. A directory the image
// left empty keeps its plain tmpfs.
func (g *Guest) Uncover() error {
	mounts, err := readMounts()
	if err != nil {
		return err
	}
	covered := Covered(mounts, g.Root)
	if len(covered) == 0 {
		return nil
	}
	// The root filesystem without its submounts, read-only: the lower
	// layers. It lives in /dev, which no step covers, until the overlays
	// hold it; then it is detached (the overlays keep it alive).
	image := g.path("/dev/.docker2vm-rootfs")
	if err := os.Mkdir(image, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	defer os.Remove(image)
	if err := unix.Mount(g.Root, image, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind mount of the root filesystem: %w", err)
	}
	defer unix.Unmount(image, unix.MNT_DETACH)
	if err := unix.Mount("", image, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("making the root filesystem's bind mount read-only: %w", err)
	}
	var errs, done []string
	loaded := false
	for _, p := range covered {
		rel, _ := filepath.Rel(g.Root, p)
		lower := filepath.Join(image, rel)
		if !nonEmptyDir(lower) {
			continue
		}
		err := overlay(lower, p)
		if err != nil && errors.Is(err, unix.ENODEV) && !loaded {
			loaded = true
			if merr := modprobe("overlay"); merr != nil {
				err = fmt.Errorf("%w (%v)", err, merr)
			} else {
				err = overlay(lower, p)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("the image's files under %s stay hidden by Gondolin's tmpfs: %v", p, err))
			continue
		}
		done = append(done, p)
	}
	if len(done) > 0 {
		g.Logf("the image's files under %s are back over Gondolin's tmpfs (overlay)", strings.Join(done, ", "))
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// nonEmptyDir reports whether p is a directory (not a symlink to one) with
// at least one entry.
func nonEmptyDir(p string) bool {
	st, err := os.Lstat(p)
	if err != nil || !st.IsDir() {
		return false
	}
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	names, _ := f.Readdirnames(1)
	return len(names) > 0
}

// overlay mounts an overlay on dir, a tmpfs, with lower below it: the
// tmpfs's entries move into the upper directory first, and back if the
// mount fails. The merged root takes lower's owner and mode (the image's
// directory, as a container shows it).
func overlay(lower, dir string) error {
	var st unix.Stat_t
	if err := unix.Lstat(lower, &st); err != nil {
		return err
	}
	base := filepath.Join(dir, OverlayDir)
	upper, work := filepath.Join(base, "upper"), filepath.Join(base, "work")
	if err := os.Mkdir(base, 0o700); err != nil {
		return err
	}
	for _, d := range []string{upper, work} {
		if err := os.Mkdir(d, 0o700); err != nil {
			os.RemoveAll(base)
			return err
		}
	}
	names, err := readNames(dir)
	if err != nil {
		os.RemoveAll(base)
		return err
	}
	var moved []string
	undo := func() {
		for _, n := range moved {
			_ = os.Rename(filepath.Join(upper, n), filepath.Join(dir, n))
		}
		_ = os.RemoveAll(base)
	}
	for _, n := range names {
		if n == OverlayDir {
			continue
		}
		if err := os.Rename(filepath.Join(dir, n), filepath.Join(upper, n)); err != nil {
			undo()
			return err
		}
		moved = append(moved, n)
	}
	if err := os.Lchown(upper, int(st.Uid), int(st.Gid)); err != nil {
		undo()
		return err
	}
	if err := unix.Chmod(upper, st.Mode&0o7777); err != nil {
		undo()
		return err
	}
	if err := unix.Mount("overlay", dir, "overlay", 0, OverlayOptions(lower, upper, work)); err != nil {
		undo()
		return fmt.Errorf("mount overlay on %s: %w", dir, err)
	}
	return nil
}

func readNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// modprobe loads a kernel module with the guest's modprobe (Gondolin's
// init has one on its PATH).
func modprobe(name string) error {
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		p := filepath.Join(dir, "modprobe")
		if _, err := os.Stat(p); err != nil {
			continue
		}
		pid, err := syscall.ForkExec(p, []string{p, name}, &syscall.ProcAttr{Files: []uintptr{0, 2, 2}})
		if err != nil {
			return fmt.Errorf("modprobe %s: %w", name, err)
		}
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
			return fmt.Errorf("modprobe %s: %w", name, err)
		}
		if !ws.Exited() || ws.ExitStatus() != 0 {
			return fmt.Errorf("modprobe %s failed (status %v)", name, ws)
		}
		return nil
	}
	return errors.New("no modprobe to load " + name)
}

// Rlimits sets the resource limits Docker gives a container that the
// kernel's defaults do not: RLIMIT_NOFILE.
func Rlimits() error {
	lim := unix.Rlimit{Cur: NoFile, Max: NoFile}
	err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	if err == nil {
		return nil
	}
	// Without the right to raise the hard limit, raise the soft one to it.
	var cur unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &cur) == nil && cur.Cur < cur.Max {
		cur.Cur = cur.Max
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &cur)
	}
	return fmt.Errorf("RLIMIT_NOFILE %d: %w", NoFile, err)
}

// WriteAgentEnv writes AgentEnvPath (AgentEnvScript of env).
func (g *Guest) WriteAgentEnv(env []string) error {
	p := g.path(AgentEnvPath)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(AgentEnvScript(env)), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}
