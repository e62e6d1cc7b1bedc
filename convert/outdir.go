package convert

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// metaFile marks a directory as a docker2vm output, which makes it safe to
// replace. Any other non-empty directory is refused: --out must never wipe
// a user's data because of a typo.
const metaFile = "meta.json"

// staging is a fresh directory beside the output, on the same filesystem, so
// that publishing is a rename.
type staging struct {
	out string
	dir string
}

func newStaging(out string) (*staging, error) {
	abs, err := filepath.Abs(out)
	if err != nil {
		return nil, fmt.Errorf("output directory %s: %w", out, err)
	}
	if err := checkReplaceable(abs); err != nil {
		return nil, err
	}
	parent := filepath.Dir(abs)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, &Error{Msg: fmt.Sprintf("cannot create %s", parent), Err: err,
			Fixes: []string{"Choose an --out path in a writable directory."}}
	}
	dir, err := os.MkdirTemp(parent, "."+filepath.Base(abs)+".tmp-")
	if err != nil {
		return nil, &Error{Msg: fmt.Sprintf("cannot write in %s", parent), Err: err,
			Fixes: []string{"Choose an --out path in a writable directory."}}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &staging{out: abs, dir: dir}, nil
}

// checkReplaceable accepts a missing path, an empty directory, or an
// earlier docker2vm output.
func checkReplaceable(out string) error {
	st, err := os.Lstat(out)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("output directory %s: %w", out, err)
	}
	if !st.IsDir() {
		return &Error{Msg: fmt.Sprintf("--out %s exists and is not a directory", out),
			Fixes: []string{"Choose a new or empty directory for --out."}}
	}
	ents, err := os.ReadDir(out)
	if err != nil {
		return fmt.Errorf("output directory %s: %w", out, err)
	}
	if len(ents) == 0 {
		return nil
	}
	if isOutput(out, ents) {
		return nil
	}
	return &Error{Msg: fmt.Sprintf("--out %s is a non-empty directory that does not hold a docker2vm output (no %s)", out, metaFile),
		Fixes: []string{"Choose a new or empty directory for --out.", "docker2vm replaces an --out directory only when it holds an earlier docker2vm result."}}
}

// isOutput reports whether out, holding ents, is a docker2vm output: one
// platform's (meta.json), or several platforms' (only subdirectories, each
// holding meta.json).
func isOutput(out string, ents []os.DirEntry) bool {
	if _, err := os.Stat(filepath.Join(out, metaFile)); err == nil {
		return true
	}
	for _, e := range ents {
		if !e.IsDir() {
			return false
		}
		if _, err := os.Stat(filepath.Join(out, e.Name(), metaFile)); err != nil {
			return false
		}
	}
	return len(ents) > 0
}

// previous returns the path of name in the output being replaced, or ""
// when there is no earlier docker2vm output.
func (s *staging) previous(name string) string {
	if _, err := os.Stat(filepath.Join(s.out, metaFile)); err != nil {
		return ""
	}
	return filepath.Join(s.out, name)
}

// sub returns the staging of a subdirectory, published with s: a
// platform's output in a multi-platform run.
func (s *staging) sub(name string) (*staging, error) {
	d := &staging{out: filepath.Join(s.out, name), dir: filepath.Join(s.dir, name)}
	if err := os.Mkdir(d.dir, 0o755); err != nil {
		return nil, err
	}
	return d, nil
}

// path returns where a file goes inside the staging directory.
func (s *staging) path(name string) string { return filepath.Join(s.dir, name) }

// publish swaps the staging directory in place of the output: the previous
// result stays intact until the new one is complete, and no file of it
// survives beside the new one.
func (s *staging) publish() error {
	if err := syncDir(s.dir); err != nil {
		return err
	}
	old := ""
	if _, err := os.Lstat(s.out); err == nil {
		// Re-check: the directory may have changed since we started.
		if err := checkReplaceable(s.out); err != nil {
			return err
		}
		old = s.dir + ".old"
		if err := os.Rename(s.out, old); err != nil {
			return fmt.Errorf("moving the previous output %s aside: %w", s.out, err)
		}
	}
	if err := os.Rename(s.dir, s.out); err != nil {
		if old != "" {
			_ = os.Rename(old, s.out)
		}
		return fmt.Errorf("publishing %s: %w", s.out, err)
	}
	if old != "" {
		if err := os.RemoveAll(old); err != nil {
			return fmt.Errorf("removing the previous output %s: %w", old, err)
		}
	}
	return syncDir(filepath.Dir(s.out))
}

// discard removes the staging directory (after a failure).
func (s *staging) discard() { os.RemoveAll(s.dir) }

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
