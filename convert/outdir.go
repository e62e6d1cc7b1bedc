package convert

// The output directory. A conversion writes into a staging directory
// beside --out (same filesystem) and publishes it by swapping it with
// --out in one step, so that --out always holds either the previous
// complete output or the new one, even if the process is killed at any
// moment.
//
// Names, for --out DIR/OUT:
//   DIR/.OUT.lock    held (flock) by the run writing OUT, from before its
//                    checks until it has published or failed, then removed;
//                    a second run into OUT waits for it. The system drops
//                    the lock when its owner dies, so a killed run never
//                    blocks the next (its empty lock file stays until then).
//   DIR/.OUT.tmp-*   staging directories. Under the lock, any that exist
//                    belong to dead runs and are removed.
//   DIR/.OUT.old     only where the filesystem cannot swap two directories
//                    (no RENAME_EXCHANGE/RENAME_SWAP): the previous output,
//                    moved aside for the moment between two renames. A run
//                    that finds it restores it when OUT is missing (the
//                    killed run had not published) and removes it otherwise.
//
// An OUT that is a mount point (a container's -v ./out:/out, an empty
// tmpfs) cannot be renamed or swapped, and what is beside it may be
// another filesystem or not writable: the run works inside it instead
// (publishInPlace), with these names:
//   OUT/.docker2vm.lock    the lock, as above.
//   OUT/.docker2vm.tmp-*   staging directories, as above.
//   OUT/.docker2vm.old     the previous output's entries while the new
//                          one's are moved in; meta.json leaves first and
//                          arrives last, so OUT never holds a meta.json
//                          over a half output. A run that finds it puts
//                          the previous output back, unless OUT has a
//                          meta.json again (the new one was all in).
//   OUT/.docker2vm.done    .old once the new output is in: removed.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/image"
	"github.com/docker2vm/docker2vm/internal/diskio"
	"github.com/docker2vm/docker2vm/internal/lock"
	"github.com/docker2vm/docker2vm/internal/mountinfo"
)

// metaFile marks a directory as a docker2vm output, which makes it safe to
// replace. Any other non-empty directory is refused: --out must never wipe
// a user's data because of a typo.
const metaFile = "meta.json"

// staging is a fresh directory beside the output, on the same filesystem, so
// that publishing is a rename.
type staging struct {
	out   string
	dir   string
	lock  *lock.File // nil for a sub-staging (its parent holds the lock)
	force bool       // --force: replace whatever out holds but guards
	// guards are the paths --force must not remove (guardedPaths).
	guards []guarded
	// inPlace: out is a mount point, dir is inside it, and publishing
	// moves entries (publishInPlace).
	inPlace bool
}

// The names inside an --out that is a mount point (see the top of this
// file). They are the run's own: never an output's files, nor the user's.
const (
	inPlaceLock = ".docker2vm.lock"
	inPlaceTmp  = ".docker2vm.tmp-"
	inPlaceOld  = ".docker2vm.old"
	inPlaceDone = ".docker2vm.done"
)

// bookkeeping reports whether name, inside out, is one of the in-place
// names.
func bookkeeping(name string) bool {
	return name == inPlaceLock || name == inPlaceOld || name == inPlaceDone || strings.HasPrefix(name, inPlaceTmp)
}

// mountPoint reports whether dir (an existing directory, st its Stat) is
// the root of a mounted filesystem, a bind mount included where the
// system lists its mounts: a directory that cannot be renamed or swapped.
func mountPoint(dir string, st os.FileInfo) bool {
	real := dir
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		real = r
	}
	if real == "/" {
		return true
	}
	if parent, err := os.Stat(filepath.Dir(real)); err == nil && !diskio.SameDevice(st, parent) {
		return true
	}
	if mounts, err := mountinfo.Read(); err == nil {
		for _, m := range mounts {
			if m.Point == real {
				return true
			}
		}
	}
	return false
}

// outNames are the names beside out that belong to it.
func outNames(out string) (lockPath, tmpPrefix, old string) {
	parent, base := filepath.Dir(out), filepath.Base(out)
	return filepath.Join(parent, "."+base+".lock"), "." + base + ".tmp-", filepath.Join(parent, "."+base+".old")
}

func newStaging(ctx context.Context, out string, force bool, guards []guarded, progress func(string, ...any)) (_ *staging, err error) {
	abs, err := filepath.Abs(out)
	if err != nil {
		return nil, fmt.Errorf("output directory %s: %w", out, err)
	}
	if st, err := os.Stat(abs); err == nil && st.IsDir() && mountPoint(abs, st) {
		return newStagingInPlace(ctx, abs, force, guards, progress)
	}
	if err := checkReplaceable(abs, force, guards); err != nil {
		return nil, err
	}
	parent := filepath.Dir(abs)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, &hint.Error{Msg: fmt.Sprintf("cannot create %s", parent), Err: err,
			Fixes: []string{"Choose an --out path in a writable directory."}}
	}
	lockPath, _, _ := outNames(abs)
	l, err := lock.Acquire(ctx, lockPath, func() {
		progress("waiting for another docker2vm run that is writing %s", abs)
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &hint.Error{Msg: fmt.Sprintf("cannot write in %s", parent), Err: err,
			Fixes: []string{"Choose an --out path in a writable directory."}}
	}
	defer func() {
		if err != nil {
			l.Remove()
		}
	}()
	if err := recoverOut(abs, progress); err != nil {
		return nil, err
	}
	// Again, under the lock: a run that held it may have changed OUT.
	if err := checkReplaceable(abs, force, guards); err != nil {
		return nil, err
	}
	_, prefix, _ := outNames(abs)
	dir, err := os.MkdirTemp(parent, prefix)
	if err != nil {
		return nil, &hint.Error{Msg: fmt.Sprintf("cannot write in %s", parent), Err: err,
			Fixes: []string{"Choose an --out path in a writable directory."}}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &staging{out: abs, dir: dir, lock: l, force: force, guards: guards}, nil
}

// newStagingInPlace is newStaging for an out that is a mount point: the
// lock and the staging directory are inside it.
func newStagingInPlace(ctx context.Context, out string, force bool, guards []guarded, progress func(string, ...any)) (_ *staging, err error) {
	cannot := func(err error) error {
		return &hint.Error{Msg: fmt.Sprintf("cannot write in %s", out), Err: err,
			Fixes: []string{"Choose an --out path in a writable directory."}}
	}
	if err := checkReplaceable(out, force, guards); err != nil {
		return nil, err
	}
	l, err := lock.Acquire(ctx, filepath.Join(out, inPlaceLock), func() {
		progress("waiting for another docker2vm run that is writing %s", out)
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, cannot(err)
	}
	defer func() {
		if err != nil {
			l.Remove()
		}
	}()
	if err := recoverInPlace(out, progress); err != nil {
		return nil, err
	}
	if err := checkReplaceable(out, force, guards); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(out, inPlaceTmp)
	if err != nil {
		return nil, cannot(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	progress("%s is a mount point: the output is staged inside it and moved into place entry by entry", out)
	return &staging{out: out, dir: dir, lock: l, force: force, guards: guards, inPlace: true}, nil
}

// recoverInPlace, called with the lock held, finishes or undoes what a run
// killed while publishing into a mount point left (see the top of this
// file), and removes its staging directories.
func recoverInPlace(out string, progress func(string, ...any)) error {
	old := filepath.Join(out, inPlaceOld)
	if _, err := os.Lstat(old); err == nil {
		if _, err := os.Lstat(filepath.Join(out, metaFile)); err == nil {
			os.Rename(old, filepath.Join(out, inPlaceDone)) // the new output is all in
		} else {
			if err := rollBackInPlace(out, nil); err != nil {
				return fmt.Errorf("restoring the previous output in %s from %s: %w", out, old, err)
			}
			progress("restored the previous output in %s, which an interrupted run had moved aside", out)
		}
	}
	if err := os.RemoveAll(filepath.Join(out, inPlaceDone)); err != nil {
		return fmt.Errorf("removing %s, left by an interrupted run: %w", inPlaceDone, err)
	}
	ents, err := os.ReadDir(out)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), inPlaceTmp) && e.IsDir() {
			if err := os.RemoveAll(filepath.Join(out, e.Name())); err != nil {
				return fmt.Errorf("removing %s, left by an interrupted run: %w", e.Name(), err)
			}
		}
	}
	return nil
}

// rollBackInPlace puts the previous output (in out/.docker2vm.old) back:
// the new output's entries that were moved in are removed first (moved;
// after a kill, nil: those that can only be an output's, the files
// docker2vm writes and platform directories), then the old ones return.
func rollBackInPlace(out string, moved []string) error {
	old := filepath.Join(out, inPlaceOld)
	if moved == nil {
		ents, err := os.ReadDir(out)
		if err != nil {
			return err
		}
		for _, e := range ents {
			n := e.Name()
			if bookkeeping(n) {
				continue
			}
			if (knownFiles[n] && e.Type().IsRegular()) || (e.IsDir() && strings.HasPrefix(n, "linux_")) {
				moved = append(moved, n)
			}
		}
	}
	for _, n := range moved {
		if err := os.RemoveAll(filepath.Join(out, n)); err != nil {
			return err
		}
	}
	ents, err := os.ReadDir(old)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.Rename(filepath.Join(old, e.Name()), filepath.Join(out, e.Name())); err != nil {
			return err
		}
	}
	return os.Remove(old)
}

// recoverOut, called with out's lock held, puts back what a killed run
// left: the previous output moved aside (restored when out is missing,
// else removed) and staging directories (removed).
func recoverOut(out string, progress func(string, ...any)) error {
	_, prefix, old := outNames(out)
	if _, err := os.Lstat(old); err == nil {
		if _, err := os.Lstat(out); errors.Is(err, os.ErrNotExist) {
			if err := os.Rename(old, out); err != nil {
				return fmt.Errorf("restoring the previous output %s from %s: %w", out, old, err)
			}
			progress("restored %s, which an interrupted run had moved aside", out)
		} else if err := os.RemoveAll(old); err != nil {
			return fmt.Errorf("removing %s, left by an interrupted run: %w", old, err)
		}
	}
	ents, err := os.ReadDir(filepath.Dir(out))
	if err != nil {
		return err
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) && e.IsDir() {
			if err := os.RemoveAll(filepath.Join(filepath.Dir(out), e.Name())); err != nil {
				return fmt.Errorf("removing %s, left by an interrupted run: %w", e.Name(), err)
			}
		}
	}
	return nil
}

// guarded is a path that --force must never remove, and what it is.
type guarded struct{ what, path string }

// guardedPaths are the paths a run depends on or that are not a run's to
// remove: the working directory, the run's source, base, cache and
// publish directory, Gondolin's image store, the temporary directories,
// the home directory and the root.
func guardedPaths(opts Options) []guarded {
	var g []guarded
	add := func(what, p string) {
		if p == "" {
			return
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return
		}
		if real, err := filepath.EvalSymlinks(abs); err == nil {
			abs = real
		}
		g = append(g, guarded{what, abs})
	}
	if wd, err := os.Getwd(); err == nil {
		add("the working directory", wd)
	}
	if opts.Source.Kind != image.KindRegistry {
		add("the image source", opts.Source.Ref)
	}
	if o := opts.Origin; o != nil {
		add("the build context", o.Context)
		add("the Dockerfile", o.Path)
	}
	add("the base bundle (--base)", opts.Base.Dir)
	for _, d := range opts.Base.Dirs {
		add("the base bundle (--base)", d)
	}
	getenv := opts.Base.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	add("the base bundle (GONDOLIN_GUEST_DIR)", getenv("GONDOLIN_GUEST_DIR"))
	add("Gondolin's image store", opts.Base.StoreDir())
	add("the cache directory", opts.Image.CacheDir)
	add("the publish directory", opts.Publish)
	add("the temporary directory ($TMPDIR)", os.TempDir())
	add("/tmp", "/tmp")
	add("/var/tmp", "/var/tmp")
	if home, err := os.UserHomeDir(); err == nil {
		add("the home directory", home)
	}
	add("the root directory", "/")
	return g
}

// forceRefusal says why --force must not replace out (an existing
// directory that is neither empty nor an earlier output), "" when it may:
// out must hold none of the guarded paths, be no mount point's root and
// have no sticky bit (a shared directory such as /tmp).
func forceRefusal(out string, st os.FileInfo, guards []guarded) string {
	real := out
	if r, err := filepath.EvalSymlinks(out); err == nil {
		real = r
	}
	var held []string
	for _, g := range guards {
		if isAncestorOrSame(real, g.path) {
			if g.path == real {
				held = append(held, "is "+g.what+" ("+g.path+")")
			} else {
				held = append(held, "holds "+g.what+" ("+g.path+")")
			}
		}
	}
	if st.Mode()&os.ModeSticky != 0 {
		held = append(held, "has the sticky bit (a directory shared by several users)")
	}
	if mountPoint(real, st) {
		held = append(held, "is the root of a mounted filesystem")
	}
	return strings.Join(held, ", ")
}

// checkReplaceable accepts a missing path, an empty directory, or an
// earlier docker2vm output holding only files docker2vm wrote (those its
// meta.json lists); with force, also a directory of other files, unless
// forceRefusal says it must not go (guards are the guarded paths).
func checkReplaceable(out string, force bool, guards []guarded) error {
	st, err := os.Lstat(out)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("output directory %s: %w", out, err)
	}
	if !st.IsDir() {
		return &hint.Error{Msg: fmt.Sprintf("--out %s exists and is not a directory", out),
			Fixes: []string{"Choose a new or empty directory for --out."}}
	}
	ents, err := os.ReadDir(out)
	if err != nil {
		return fmt.Errorf("output directory %s: %w", out, err)
	}
	if _, err := os.Lstat(filepath.Join(out, inPlaceOld)); err == nil && mountPoint(out, st) {
		// A run killed while publishing into this mount point: what it
		// holds is known once the next run (under the lock) has finished
		// or undone that, and is checked then.
		return nil
	}
	// The names of a run writing inside a mount point are not the output's.
	ents = slices.DeleteFunc(ents, func(e os.DirEntry) bool { return bookkeeping(e.Name()) })
	if len(ents) == 0 {
		return nil
	}
	isOut, foreign := outputFiles(out, ents)
	if force && (!isOut || len(foreign) > 0) {
		if why := forceRefusal(out, st, guards); why != "" {
			return &hint.Error{Msg: fmt.Sprintf("--out %s %s: refused even with --force, which replaces only a directory of its own", out, why),
				Fixes: []string{"Choose a directory of its own for --out, e.g. ./out/app."}}
		}
		return nil
	}
	if !isOut {
		return &hint.Error{Msg: fmt.Sprintf("--out %s is a non-empty directory that does not hold a docker2vm output (no %s)", out, metaFile),
			Fixes: []string{"Choose a new or empty directory for --out.", "docker2vm replaces an --out directory only when it holds an earlier docker2vm result, or with --force."}}
	}
	if len(foreign) > 0 {
		shown := foreign
		if len(shown) > 5 {
			shown = append(shown[:5:5], fmt.Sprintf("and %d more", len(foreign)-5))
		}
		return &hint.Error{Msg: fmt.Sprintf("--out %s holds files docker2vm did not write: %s; replacing the output would delete them", out, strings.Join(shown, ", ")),
			Fixes: []string{"Move them out of " + out + ", or choose another --out.", "Or pass --force to replace " + out + " with them."}}
	}
	return nil
}

// isAncestorOrSame reports whether dir is p or one of its parents.
func isAncestorOrSame(dir, p string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && (rel == "." || !strings.HasPrefix(rel, ".."))
}

// knownFiles are the files of an output written before meta.json listed
// them.
var knownFiles = map[string]bool{RootfsFile: true, metaFile: true, "manifest.json": true,
	"vmlinuz-virt": true, "initramfs.cpio.lz4": true, "krun-kernel": true, "krun-empty-initrd": true}

// outputFiles reports whether out, holding ents, is a docker2vm output
// (one platform's, with meta.json; or several platforms', only
// subdirectories that are) and which of its entries docker2vm did not
// write.
func outputFiles(out string, ents []os.DirEntry) (bool, []string) {
	// Never waits: a FIFO or device at meta.json is not an output's.
	if b, err := diskio.ReadRegular(filepath.Join(out, metaFile), 4<<20); err == nil {
		var m struct {
			Files []string `json:"files"`
		}
		ours := knownFiles
		if json.Unmarshal(b, &m) == nil && len(m.Files) > 0 {
			ours = map[string]bool{}
			for _, f := range m.Files {
				ours[f] = true
			}
		}
		var foreign []string
		for _, e := range ents {
			if !ours[e.Name()] || !e.Type().IsRegular() {
				foreign = append(foreign, e.Name())
			}
		}
		return true, foreign
	}
	var foreign []string
	for _, e := range ents {
		if !e.IsDir() {
			return false, nil
		}
		sub := filepath.Join(out, e.Name())
		sents, err := os.ReadDir(sub)
		if err != nil {
			return false, nil
		}
		ok, f := outputFiles(sub, sents)
		if !ok || !strings.Contains(e.Name(), "_") {
			return false, nil
		}
		for _, x := range f {
			foreign = append(foreign, e.Name()+"/"+x)
		}
	}
	return len(ents) > 0, foreign
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

// publish puts the staging directory in place of the output: swapped in
// one step where the filesystem can (the previous output then sits at the
// staging name and is removed), else by two renames through the .old
// name that the next run knows how to recover from. The lock is released.
func (s *staging) publish() error {
	defer s.lock.Remove()
	if err := diskio.SyncDir(s.dir); err != nil {
		return err
	}
	if s.inPlace {
		return s.publishInPlace()
	}
	parent := filepath.Dir(s.out)
	if _, err := os.Lstat(s.out); errors.Is(err, os.ErrNotExist) {
		if err := os.Rename(s.dir, s.out); err != nil {
			return fmt.Errorf("publishing %s: %w", s.out, err)
		}
		return diskio.SyncDir(parent)
	}
	// Re-check: the directory may have changed since we started (by hand:
	// other docker2vm runs wait for the lock).
	if err := checkReplaceable(s.out, s.force, s.guards); err != nil {
		return err
	}
	err := diskio.Exchange(s.dir, s.out)
	switch {
	case err == nil:
		if err := diskio.SyncDir(parent); err != nil {
			return err
		}
		// s.dir now holds the previous output. Published already: what
		// cannot be removed now, the next run into s.out removes.
		os.RemoveAll(s.dir)
		return nil
	case !errors.Is(err, diskio.ErrUnsupported):
		return fmt.Errorf("publishing %s: %w", s.out, err)
	}
	_, _, old := outNames(s.out)
	if err := os.Rename(s.out, old); err != nil {
		return fmt.Errorf("moving the previous output %s aside: %w", s.out, err)
	}
	if err := os.Rename(s.dir, s.out); err != nil {
		if rerr := os.Rename(old, s.out); rerr != nil {
			return fmt.Errorf("publishing %s: %w (the previous output is at %s; the next run restores it)", s.out, err, old)
		}
		return fmt.Errorf("publishing %s: %w", s.out, err)
	}
	if err := diskio.SyncDir(parent); err != nil {
		return err
	}
	os.RemoveAll(old) // else the next run removes it
	return nil
}

// publishInPlace publishes into an out that is a mount point: the
// previous output's entries move into out/.docker2vm.old (meta.json
// first), the new ones into out (meta.json last), then the old ones go.
// A failure puts the previous output back; a kill is finished or undone
// by the next run (recoverInPlace). Every rename stays within out's
// filesystem.
func (s *staging) publishInPlace() error {
	if err := checkReplaceable(s.out, s.force, s.guards); err != nil {
		return err
	}
	old := filepath.Join(s.out, inPlaceOld)
	if err := os.Mkdir(old, 0o700); err != nil {
		return fmt.Errorf("publishing %s: %w", s.out, err)
	}
	names := func(dir string) ([]string, error) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return nil, err
		}
		var ns []string
		for _, e := range ents {
			if !bookkeeping(e.Name()) {
				ns = append(ns, e.Name())
			}
		}
		// meta.json leaves first and arrives last.
		slices.SortStableFunc(ns, func(a, b string) int {
			return cmpBool(a != metaFile, b != metaFile)
		})
		return ns, nil
	}
	moved := []string{} // not nil: rollBackInPlace removes these only
	fail := func(err error) error {
		if rerr := rollBackInPlace(s.out, moved); rerr != nil {
			return fmt.Errorf("publishing %s: %w (putting the previous output back failed too: %v; the next run restores it)", s.out, err, rerr)
		}
		return fmt.Errorf("publishing %s: %w", s.out, err)
	}
	prev, err := names(s.out)
	if err != nil {
		return fail(err)
	}
	for _, n := range prev {
		if err := os.Rename(filepath.Join(s.out, n), filepath.Join(old, n)); err != nil {
			return fail(err)
		}
	}
	next, err := names(s.dir)
	if err != nil {
		return fail(err)
	}
	slices.Reverse(next)
	for _, n := range next {
		if err := os.Rename(filepath.Join(s.dir, n), filepath.Join(s.out, n)); err != nil {
			return fail(err)
		}
		moved = append(moved, n)
	}
	if err := diskio.SyncDir(s.out); err != nil {
		return fail(err)
	}
	// Published: what cannot be removed now, the next run removes.
	done := filepath.Join(s.out, inPlaceDone)
	if os.Rename(old, done) == nil {
		diskio.SyncDir(s.out)
		os.RemoveAll(done)
	}
	os.RemoveAll(s.dir)
	return nil
}

// cmpBool orders false before true.
func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

// discard removes the staging directory (after a failure) and releases
// the lock.
func (s *staging) discard() {
	os.RemoveAll(s.dir)
	s.lock.Remove()
}
