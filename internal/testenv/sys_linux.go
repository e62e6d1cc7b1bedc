//go:build linux

package testenv

import "syscall"

// The few calls the fixtures make that only Linux has. The fixtures need a
// Linux host anyway (debootstrap, runc, loop mounts, QEMU with our
// kernels); on other systems the package still builds, so that the tests
// that use it vet and skip there.

// ChildProcAttr puts a child in its own process group and has the kernel
// kill it if the test binary dies first.
func ChildProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// UnmountDetach lazily unmounts p.
func UnmountDetach(p string) error { return syscall.Unmount(p, syscall.MNT_DETACH) }
