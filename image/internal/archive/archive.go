// Package archive reads image archives (tar files, optionally gzip- or
// zstd-compressed) in place.
//
// An archive is read in place: its tar headers are indexed once (member
// name -> offset and size) and members are served as io.SectionReaders over
// the file. A gzip- or zstd-compressed archive cannot be seeked, so it is
// decompressed once into a temporary file (under CacheDir/tmp, or
// os.TempDir() with NoCache), which Close removes.
package archive

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/image/internal/blob"
	"github.com/docker2vm/docker2vm/internal/cachedir"
	"github.com/docker2vm/docker2vm/internal/confine"
	"github.com/docker2vm/docker2vm/internal/lock"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

const (
	maxArchiveMembers  = 1 << 20
	archiveTempPattern = "docker2vm-archive-*.tar"
)

type member struct {
	off, size int64
	// isLink: the member is a symlink to link, or a hardlink to the
	// member named "/"+link's rest (resolved like an absolute symlink).
	isLink bool
	link   string
}

// FS is an indexed tar file. Members are found by name as in the tree
// the archive would extract to: directories are implied by the names below
// them, and symlinks (in the middle of a name too) are followed inside the
// archive by confine's rules.
type FS struct {
	f       *os.File
	members map[string]member
	names   []string // the members' names, sorted: a prefix search finds directories
	temp    string   // removed on close when set
}

// CleanMember is a member name as the archive would extract it: slashes,
// no leading "/", "." or "..".
func CleanMember(name string) string {
	name = strings.TrimPrefix(path.Clean("/"+strings.ReplaceAll(name, "\\", "/")), "/")
	return name
}

func indexTar(ctx context.Context, f *os.File, where string) (*FS, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	total := fi.Size()
	t := &FS{f: f, members: map[string]member{}}
	tr := tar.NewReader(f)
	for n := 0; ; n++ {
		if n%256 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		if n > maxArchiveMembers {
			return nil, hint.New(nil, nil, "%s has more than %d members", where, maxArchiveMembers)
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, NotArchive(where, fmt.Errorf("reading tar header: %w", err))
		}
		name := CleanMember(hdr.Name)
		switch hdr.Typeflag {
		case tar.TypeReg, 0: // '0' and the old NUL type
			off, err := f.Seek(0, io.SeekCurrent)
			if err != nil {
				return nil, err
			}
			if hdr.Size < 0 || off+hdr.Size > total {
				return nil, NotArchive(where, fmt.Errorf("member %s is truncated", hdr.Name))
			}
			t.members[name] = member{off: off, size: hdr.Size}
		case tar.TypeSymlink:
			t.members[name] = member{isLink: true, link: strings.ReplaceAll(hdr.Linkname, "\\", "/")}
		case tar.TypeLink:
			// A hardlink names another member from the archive's top.
			t.members[name] = member{isLink: true, link: "/" + CleanMember(hdr.Linkname)}
		}
	}
	t.names = make([]string, 0, len(t.members))
	for name := range t.members {
		t.names = append(t.names, name)
	}
	sort.Strings(t.names)
	return t, nil
}

// NotArchive says that what is at where is not an image archive, and why,
// unless err is a full disk (not the archive's fault).
func NotArchive(where string, err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		// Not the archive's fault: the caller names the full filesystem.
		return fmt.Errorf("reading the archive %s: %w", where, err)
	}
	return hint.New(err, []string{
		"--oci-tar takes an OCI archive (e.g. `docker buildx build --output type=oci,dest=FILE`, `skopeo copy ... oci-archive:FILE`) or a `docker save` archive, optionally gzip-compressed.",
	}, "%s is not a valid image archive", where)
}

// members is an archive as confine.Resolve walks it: a node is a member's
// name ("" for the top).
type members struct{ t *FS }

func (ms members) Child(dir, name string) (string, confine.Kind, error) {
	p := name
	if dir != "" {
		p = dir + "/" + name
	}
	if m, ok := ms.t.members[p]; ok {
		if m.isLink {
			return p, confine.Symlink, nil
		}
		return p, confine.Other, nil
	}
	if i := sort.SearchStrings(ms.t.names, p+"/"); i < len(ms.t.names) && strings.HasPrefix(ms.t.names[i], p+"/") {
		return p, confine.Dir, nil
	}
	return "", confine.Missing, nil
}

func (ms members) Target(p string) (string, error) { return ms.t.members[p].link, nil }

func (ms members) Mkdir(dir, name, p string) (string, error) {
	return "", fmt.Errorf("%s: an archive is read-only", p)
}

func (ms members) Describe(string) string { return "file" }

// Section finds the file member at name, following symlinks and hardlinks.
// Symlink targets are walked as the kernel walks them (not cleaned
// lexically first): docker load and skopeo extract an archive and read the
// files through the filesystem.
func (t *FS) Section(name string) (*io.SectionReader, bool) {
	r, err := confine.Resolve(members{t}, "", strings.ReplaceAll(name, "\\", "/"), confine.Options{FollowLast: true})
	if err != nil || r.Kind != confine.Other {
		return nil, false
	}
	m := t.members[r.Node]
	return io.NewSectionReader(t.f, m.off, m.size), true
}

// Open opens the file member at name (see Section); a missing one is
// fs.ErrNotExist.
func (t *FS) Open(name string) (io.ReadCloser, error) {
	sr, ok := t.Section(name)
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return io.NopCloser(sr), nil
}

// Has reports whether the archive has a file member at name.
func (t *FS) Has(name string) bool { _, ok := t.Section(name); return ok }

// Close closes the archive and removes its decompressed copy.
func (t *FS) Close() error {
	err := t.f.Close()
	if t.temp != "" {
		if rerr := os.Remove(t.temp); err == nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = rerr
		}
	}
	return err
}

// Options say where a compressed archive is decompressed to and how much
// of it is accepted.
type Options struct {
	// CacheDir, when set, holds the decompressed copy (in its tmp/);
	// otherwise it goes to os.TempDir().
	CacheDir string
	// MaxSize bounds the decompressed size: a guard against
	// decompression bombs. 0 means 1 TiB.
	MaxSize int64
	// Progress, when set, is told of a decompression.
	Progress io.Writer
}

// Open opens an archive file, decompressing it to a temporary file when it
// is compressed, and indexes it.
func Open(ctx context.Context, p string, opts Options) (*FS, error) {
	where := "archive " + p
	f, err := os.Open(p)
	if err != nil {
		return nil, hint.New(err, []string{"Check the path given to --oci-tar (PATH or PATH:REF)."}, "cannot open archive %s", p)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if fi.IsDir() {
		f.Close()
		return nil, hint.New(nil, []string{"--oci-tar takes a tar file; for a layout directory use --oci-layout."}, "%s is a directory", p)
	}
	head := make([]byte, blob.MagicSize)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	temp := ""
	if c := blob.SniffCompression(head); c != "none" {
		tf, err := decompressToTemp(ctx, f, c, opts, where)
		f.Close()
		if err != nil {
			return nil, err
		}
		f, temp = tf, tf.Name()
	}
	t, err := indexTar(ctx, f, where)
	if err != nil {
		f.Close()
		if temp != "" {
			os.Remove(temp)
		}
		return nil, err
	}
	t.temp = temp
	return t, nil
}

// reclaimArchiveTemps removes the decompressed archives in dir that no
// live process holds open: those of killed runs (several GB each).
func reclaimArchiveTemps(dir string) {
	lock.ReclaimHeld(dir, func(name string) bool {
		ok, _ := filepath.Match(archiveTempPattern, name)
		return ok
	})
}

func decompressToTemp(ctx context.Context, f *os.File, comp string, opts Options, where string) (*os.File, error) {
	dir := os.TempDir()
	if opts.CacheDir != "" {
		d := cachedir.TmpDir(opts.CacheDir)
		if err := os.MkdirAll(d, 0o755); err == nil {
			dir = d
		}
	}
	var r io.Reader
	br := bufio.NewReaderSize(f, 256<<10)
	switch comp {
	case "gzip":
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, NotArchive(where, err)
		}
		defer zr.Close()
		r = zr
	case "zstd":
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, NotArchive(where, err)
		}
		defer zr.Close()
		r = zr
	}
	reclaimArchiveTemps(dir)
	tf, err := os.CreateTemp(dir, archiveTempPattern)
	if err != nil {
		return nil, hint.New(err, []string{"Free disk space or set TMPDIR/--cache-dir to a directory with room."}, "cannot create a temporary file to decompress %s", where)
	}
	// Locked for as long as it is open, so that reclaimArchiveTemps
	// leaves it alone. (A run that reclaims it between CreateTemp and the
	// lock removes the name only: this run still reads its own open file.)
	if _, err := lock.TryFile(tf); err != nil {
		tf.Close()
		os.Remove(tf.Name())
		return nil, fmt.Errorf("locking %s: %w", tf.Name(), err)
	}
	if opts.Progress != nil {
		fmt.Fprintf(opts.Progress, "Decompressing %s (%s) to %s\n", where, comp, tf.Name())
	}
	limit := opts.MaxSize
	if limit <= 0 {
		limit = 1 << 40
	}
	n, err := blob.CopyCtx(ctx, tf, io.LimitReader(r, limit+1))
	if err == nil && n > limit {
		err = hint.New(nil, []string{"Decompress the archive yourself and pass the .tar, if it is genuine."}, "%s decompresses to more than %d bytes", where, limit)
	}
	if err == nil {
		_, err = tf.Seek(0, io.SeekStart)
	}
	if err != nil {
		tf.Close()
		os.Remove(tf.Name())
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if _, ok := err.(*hint.Error); ok {
			return nil, err
		}
		return nil, NotArchive(where, fmt.Errorf("decompressing: %w", err))
	}
	return tf, nil
}
