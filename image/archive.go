package image

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
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
	"github.com/docker2vm/docker2vm/internal/cachedir"
	"github.com/docker2vm/docker2vm/internal/confine"
	"github.com/docker2vm/docker2vm/internal/lock"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// An archive is read in place: its tar headers are indexed once (member
// name -> offset and size) and members are served as io.SectionReaders over
// the file. A gzip- or zstd-compressed archive cannot be seeked, so it is
// decompressed once into a temporary file (under CacheDir/tmp, or
// os.TempDir() with NoCache), which Close removes.

const (
	maxArchiveMembers  = 1 << 20
	maxDockerManifest  = 16 << 20
	archiveMagicPeek   = 4
	archiveTempPattern = "docker2vm-archive-*.tar"
)

type member struct {
	off, size int64
	// isLink: the member is a symlink to link, or a hardlink to the
	// member named "/"+link's rest (resolved like an absolute symlink).
	isLink bool
	link   string
}

// tarFS is an indexed tar file. Members are found by name as in the tree
// the archive would extract to: directories are implied by the names below
// them, and symlinks (in the middle of a name too) are followed inside the
// archive by confine's rules.
type tarFS struct {
	f       *os.File
	members map[string]member
	names   []string // the members' names, sorted: a prefix search finds directories
	temp    string   // removed on close when set
}

func cleanMember(name string) string {
	name = strings.TrimPrefix(path.Clean("/"+strings.ReplaceAll(name, "\\", "/")), "/")
	return name
}

func indexTar(ctx context.Context, f *os.File, where string) (*tarFS, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	total := fi.Size()
	t := &tarFS{f: f, members: map[string]member{}}
	tr := tar.NewReader(f)
	for n := 0; ; n++ {
		if n%256 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		if n > maxArchiveMembers {
			return nil, newError(nil, nil, "%s has more than %d members", where, maxArchiveMembers)
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, notArchiveError(where, fmt.Errorf("reading tar header: %w", err))
		}
		name := cleanMember(hdr.Name)
		switch hdr.Typeflag {
		case tar.TypeReg, 0: // '0' and the old NUL type
			off, err := f.Seek(0, io.SeekCurrent)
			if err != nil {
				return nil, err
			}
			if hdr.Size < 0 || off+hdr.Size > total {
				return nil, notArchiveError(where, fmt.Errorf("member %s is truncated", hdr.Name))
			}
			t.members[name] = member{off: off, size: hdr.Size}
		case tar.TypeSymlink:
			t.members[name] = member{isLink: true, link: strings.ReplaceAll(hdr.Linkname, "\\", "/")}
		case tar.TypeLink:
			// A hardlink names another member from the archive's top.
			t.members[name] = member{isLink: true, link: "/" + cleanMember(hdr.Linkname)}
		}
	}
	t.names = make([]string, 0, len(t.members))
	for name := range t.members {
		t.names = append(t.names, name)
	}
	sort.Strings(t.names)
	return t, nil
}

func notArchiveError(where string, err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		// Not the archive's fault: the caller names the full filesystem.
		return fmt.Errorf("reading the archive %s: %w", where, err)
	}
	return newError(err, []string{
		"--oci-tar takes an OCI archive (e.g. `docker buildx build --output type=oci,dest=FILE`, `skopeo copy ... oci-archive:FILE`) or a `docker save` archive, optionally gzip-compressed.",
	}, "%s is not a valid image archive", where)
}

// members is an archive as confine.Resolve walks it: a node is a member's
// name ("" for the top).
type members struct{ t *tarFS }

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

// lookup finds the file member at name, following symlinks and hardlinks.
// Symlink targets are walked as the kernel walks them (not cleaned
// lexically first): docker load and skopeo extract an archive and read the
// files through the filesystem.
func (t *tarFS) lookup(name string) (member, bool) {
	r, err := confine.Resolve(members{t}, "", strings.ReplaceAll(name, "\\", "/"), confine.Options{FollowLast: true})
	if err != nil || r.Kind != confine.Other {
		return member{}, false
	}
	return t.members[r.Node], true
}

func (t *tarFS) open(name string) (io.ReadCloser, error) {
	m, ok := t.lookup(name)
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return io.NopCloser(io.NewSectionReader(t.f, m.off, m.size)), nil
}

func (t *tarFS) has(name string) bool { _, ok := t.lookup(name); return ok }

func (t *tarFS) close() error {
	err := t.f.Close()
	if t.temp != "" {
		if rerr := os.Remove(t.temp); err == nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = rerr
		}
	}
	return err
}

// openArchive opens an archive file, decompressing it to a temporary file
// when it is compressed, and indexes it.
func openArchive(ctx context.Context, p string, opts Options) (*tarFS, error) {
	where := "archive " + p
	f, err := os.Open(p)
	if err != nil {
		return nil, newError(err, []string{"Check the path given to --oci-tar (PATH or PATH:REF)."}, "cannot open archive %s", p)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if fi.IsDir() {
		f.Close()
		return nil, newError(nil, []string{"--oci-tar takes a tar file; for a layout directory use --oci-layout."}, "%s is a directory", p)
	}
	head := make([]byte, archiveMagicPeek)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	temp := ""
	if c := sniffCompression(head); c != "none" {
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
	if !opts.NoCache && opts.CacheDir != "" {
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
			return nil, notArchiveError(where, err)
		}
		defer zr.Close()
		r = zr
	case "zstd":
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, notArchiveError(where, err)
		}
		defer zr.Close()
		r = zr
	}
	reclaimArchiveTemps(dir)
	tf, err := os.CreateTemp(dir, archiveTempPattern)
	if err != nil {
		return nil, newError(err, []string{"Free disk space or set TMPDIR/--cache-dir to a directory with room."}, "cannot create a temporary file to decompress %s", where)
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
	limit := opts.MaxArchiveSize
	if limit <= 0 {
		limit = 1 << 40
	}
	n, err := copyCtx(ctx, tf, io.LimitReader(r, limit+1))
	if err == nil && n > limit {
		err = newError(nil, []string{"Decompress the archive yourself and pass the .tar, if it is genuine."}, "%s decompresses to more than %d bytes", where, limit)
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
		return nil, notArchiveError(where, fmt.Errorf("decompressing: %w", err))
	}
	return tf, nil
}

func resolveArchive(ctx context.Context, src Source, opts Options) (*Image, error) {
	p, ref := refNameFor(src, opts)
	t, err := openArchive(ctx, p, opts)
	if err != nil {
		return nil, err
	}
	where := "archive " + p
	var img *Image
	switch {
	case t.has("index.json"):
		img, err = resolveOCI(ctx, &layoutStore{fsys: t, where: where}, ref, opts)
	case t.has("manifest.json"):
		img, err = resolveDockerSave(ctx, t, where, ref, opts)
	default:
		err = notArchiveError(where, errors.New("it has neither index.json (OCI layout) nor manifest.json (docker save) at its top"))
	}
	if err != nil {
		t.close()
		return nil, err
	}
	return img, nil
}

// dockerSaveEntry is one image in a docker-save manifest.json.
type dockerSaveEntry struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// dockerSaveStore serves the blobs of a legacy docker-save archive by the
// digests resolveDockerSave assigned them.
type dockerSaveStore struct {
	t      *tarFS
	byHash map[v1.Hash]string // digest -> member name
	where  string
}

func (s *dockerSaveStore) manifest(ctx context.Context, desc v1.Descriptor, what string) ([]byte, error) {
	return nil, fmt.Errorf("%s: %s has no stored manifests", what, s.where)
}

func (s *dockerSaveStore) blob(ctx context.Context, desc v1.Descriptor, what string) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	name, ok := s.byHash[desc.Digest]
	if !ok {
		return nil, fmt.Errorf("%s: not in %s", what, s.where)
	}
	return s.t.open(name)
}

func (s *dockerSaveStore) layer(_, stream context.Context, img *Image, i int) (io.ReadCloser, error) {
	return s.blob(stream, img.layers[i], img.layerName(i))
}

func (s *dockerSaveStore) close() error { return s.t.close() }

// digestFromName returns the digest a member name encodes: "blobs/sha256/<hex>"
// (Docker 25+) or "<hex>.json" (older configs).
func digestFromName(name string) (v1.Hash, bool) {
	name = cleanMember(name)
	if strings.HasPrefix(name, "sha256:") && !strings.Contains(name, "/") { // go-containerregistry's tarball
		h, err := v1.NewHash(name)
		return h, err == nil
	}
	if strings.HasPrefix(name, "blobs/sha256/") {
		h, err := v1.NewHash("sha256:" + strings.TrimPrefix(name, "blobs/sha256/"))
		return h, err == nil
	}
	if strings.HasSuffix(name, ".json") && !strings.Contains(name, "/") {
		h, err := v1.NewHash("sha256:" + strings.TrimSuffix(name, ".json"))
		return h, err == nil
	}
	return v1.Hash{}, false
}

// Long: a docker save archive's manifest.json, its config and its layers
// are read and checked field by field, in the format's order, each with its
// own message.
func resolveDockerSave(ctx context.Context, t *tarFS, where, ref string, opts Options) (*Image, error) {
	rc, err := t.open("manifest.json")
	if err != nil {
		return nil, err
	}
	raw, err := readAllLimit(rc, maxDockerManifest, "manifest.json in "+where)
	rc.Close()
	if err != nil {
		return nil, err
	}
	var entries []dockerSaveEntry
	if err := json.Unmarshal(raw, &entries); err != nil {
		return nil, notArchiveError(where, fmt.Errorf("parsing manifest.json: %w", err))
	}
	e, err := pickDockerSaveEntry(entries, ref, where)
	if err != nil {
		return nil, err
	}
	// Config: verified when its name encodes its digest.
	cfgWhat := "config " + e.Config
	rc, err = t.open(e.Config)
	if err != nil {
		return nil, newError(err, nil, "%s: %s is missing from %s", cfgWhat, e.Config, where)
	}
	cfgRaw, err := readAllLimit(rc, maxConfigSize, cfgWhat)
	rc.Close()
	if err != nil {
		return nil, err
	}
	cfgDigest := sha256Of(cfgRaw)
	if want, ok := digestFromName(e.Config); ok {
		cfgWhat = "config " + want.String()
		if want != cfgDigest {
			return nil, &integrityError{what: cfgWhat, msg: "got " + cfgDigest.String()}
		}
	}
	if err := checkLayerCount(len(e.Layers), opts.maxLayers(), "the image in "+where); err != nil {
		return nil, err
	}
	st := &dockerSaveStore{t: t, byHash: map[v1.Hash]string{}, where: where}
	m := &v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.DockerManifestSchema2,
		Config:        v1.Descriptor{MediaType: types.DockerConfigJSON, Size: int64(len(cfgRaw)), Digest: cfgDigest},
	}
	var cfg struct {
		RootFS struct {
			DiffIDs []v1.Hash `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(cfgRaw, &cfg); err != nil {
		return nil, newError(err, []string{"The archive is corrupt: save the image again."}, "cannot parse %s", cfgWhat)
	}
	if len(cfg.RootFS.DiffIDs) != len(e.Layers) {
		return nil, newError(nil, []string{"The archive is corrupt: save the image again."},
			"%s lists %d layers but its config has %d diff IDs", where, len(e.Layers), len(cfg.RootFS.DiffIDs))
	}
	for i, name := range e.Layers {
		what := LayerName(i, len(e.Layers), name)
		mb, ok := t.lookup(name)
		if !ok {
			return nil, newError(nil, []string{"The archive is incomplete: save the image again."}, "%s is missing from %s", what, where)
		}
		head := make([]byte, archiveMagicPeek)
		n, _ := io.ReadFull(io.NewSectionReader(t.f, mb.off, mb.size), head)
		comp := sniffCompression(head[:n])
		diffID := cfg.RootFS.DiffIDs[i]
		var dg v1.Hash
		if h, ok := digestFromName(name); ok {
			dg = h
		} else if comp == "none" {
			dg = diffID // the stored bytes are the uncompressed tar
		} else {
			// A compressed layer without its digest in the name: hash it.
			h := sha256.New()
			if _, err := copyCtx(ctx, h, io.NewSectionReader(t.f, mb.off, mb.size)); err != nil {
				return nil, fmt.Errorf("hashing %s: %w", what, err)
			}
			dg = hashOf(h)
		}
		mt := types.MediaType("application/vnd.docker.image.rootfs.diff.tar")
		switch comp {
		case "gzip":
			mt = types.DockerLayer
		case "zstd":
			mt = types.OCILayerZStd
		}
		st.byHash[dg] = name
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: mt, Size: mb.size, Digest: dg})
	}
	rawManifest, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	img, err := buildImage(sha256Of(rawManifest), m, rawManifest, cfgDigest, cfgRaw, opts.Platform, nil)
	if err != nil {
		if pe, ok := err.(*platformErr); ok {
			return nil, pe.err
		}
		return nil, err
	}
	img.store = st
	img.RefName = ref
	for i := range img.Layers {
		img.Layers[i].Compression = sniffName(img.layers[i].MediaType)
	}
	return img, nil
}

func sniffName(mt types.MediaType) string {
	c, _ := compressionOf(mt, "")
	return c
}

func pickDockerSaveEntry(entries []dockerSaveEntry, ref, where string) (dockerSaveEntry, error) {
	var tags []string
	for _, e := range entries {
		tags = append(tags, e.RepoTags...)
	}
	if ref == "" {
		switch len(entries) {
		case 1:
			return entries[0], nil
		case 0:
			return dockerSaveEntry{}, notArchiveError(where, errors.New("its manifest.json lists no images"))
		}
		return dockerSaveEntry{}, newError(nil, []string{
			fmt.Sprintf("Select one with %s:REF (or the reference name option), REF one of: %s.", where, strings.Join(tags, ", ")),
		}, "%s holds %d images; available refs: %s", where, len(entries), strings.Join(tags, ", "))
	}
	for _, e := range entries {
		for _, t := range e.RepoTags {
			if t == ref || strings.HasSuffix(t, "/"+ref) || strings.HasSuffix(t, ":"+ref) && !strings.Contains(ref, ":") && countTag(entries, ref) == 1 {
				return e, nil
			}
		}
	}
	avail := strings.Join(tags, ", ")
	if avail == "" {
		avail = "none (the images have no tags)"
	}
	return dockerSaveEntry{}, newError(nil, []string{"Use one of the available refs: " + avail + "."},
		"%s has no image named %q; available refs: %s", where, ref, avail)
}

// countTag counts images having a tag ending in ":ref".
func countTag(entries []dockerSaveEntry, ref string) int {
	n := 0
	for _, e := range entries {
		for _, t := range e.RepoTags {
			if strings.HasSuffix(t, ":"+ref) {
				n++
				break
			}
		}
	}
	return n
}
