//go:build !linux

package convert

import "errors"

func mountTmpfs(string) error { return errors.ErrUnsupported }

func unmount(string) {}
