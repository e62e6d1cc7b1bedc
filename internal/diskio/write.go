package diskio

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile replaces path with data atomically: written to a temporary
// name beside it (.NAME.tmp-RANDOM), then renamed over it, so that a
// reader sees the old file or the new one, whole. Durable also syncs the
// file before the rename and the directory after it, so that the new
// content survives a crash once WriteFile returns.
func WriteFile(path string, data []byte, perm os.FileMode, durable bool) error {
	var r [6]byte
	if _, err := rand.Read(r[:]); err != nil {
		return err
	}
	return WriteFileVia(filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-"+hex.EncodeToString(r[:])), path, data, perm, durable)
}

// WriteFileVia is WriteFile through the temporary name tmp, which must
// not exist (a caller that claims its temporary files names them).
func WriteFileVia(tmp, path string, data []byte, perm os.FileMode, durable bool) error {
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	renamed := false
	defer func() {
		f.Close()
		if !renamed {
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if durable {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("sync %s: %w", tmp, err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	renamed = true
	if durable {
		return SyncDir(filepath.Dir(path))
	}
	return nil
}

// SyncDir makes dir's entries durable (an fsync of the directory): what
// was created or renamed in it survives a crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
