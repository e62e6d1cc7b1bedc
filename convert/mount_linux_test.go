//go:build linux

package convert

import "syscall"

func mountTmpfs(dir string) error { return syscall.Mount("tmpfs", dir, "tmpfs", 0, "") }

func unmount(dir string) { _ = syscall.Unmount(dir, syscall.MNT_DETACH) }
