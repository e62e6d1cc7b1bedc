//go:build !linux

package guestagent

import (
	"errors"
	"os"
	"syscall"
)

type reaper struct{}

func startReaper() *reaper { return nil }

func (r *reaper) start(path string, argv, env []string, dir string, files []*os.File, sys *syscall.SysProcAttr) (func() syscall.WaitStatus, error) {
	return nil, errors.New("reaper: linux only")
}
