//go:build !linux

package testenv

import (
	"errors"
	"syscall"
)

// ChildProcAttr puts a child in its own process group.
func ChildProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// UnmountDetach is not supported here.
func UnmountDetach(string) error { return errors.ErrUnsupported }
