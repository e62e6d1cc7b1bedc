//go:build !linux

package testenv

import (
	"errors"
	"syscall"
)

func childProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

func unmountDetach(string) error { return errors.ErrUnsupported }
