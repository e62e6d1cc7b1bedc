package convert

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/docker2vm/docker2vm/ext4"
	"github.com/docker2vm/docker2vm/fstree"
	"github.com/docker2vm/docker2vm/gondolin"
	"github.com/docker2vm/docker2vm/gondolin/guest"
	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/image"
	"github.com/docker2vm/docker2vm/internal/cachedir"
	"github.com/docker2vm/docker2vm/internal/units"
	"github.com/docker2vm/docker2vm/rootfs"
)

// Output file names.
const (
	RootfsFile   = "rootfs.ext4"
	MetadataFile = metaFile
)

// Metadata is meta.json: where the rootfs came from and how to run it.
type Metadata struct {
	SchemaVersion int           `json:"schemaVersion"`
	GeneratedAt   string        `json:"generatedAt"`
	Generator     string        `json:"generator"`
	Source        SourceInfo    `json:"source"`
	SourceDigest  string        `json:"sourceDigest"`
	IndexDigest   string        `json:"indexDigest,omitempty"`
	Platform      string        `json:"platform"`
	Mode          Mode          `json:"mode"`
	Runtime       RuntimeConfig `json:"runtime"`
	// Labels are the image's (LABEL, --label), as docker inspect shows them.
	Labels map[string]string `json:"labels,omitempty"`
	Layers []LayerInfo       `json:"layers"`
	Rootfs RootfsInfo        `json:"rootfs"`
	// RuntimeInjection lists what was added to the image for Gondolin.
	RuntimeInjection Injection `json:"runtimeInjection"`
	// Files are the names of the files this output holds (meta.json
	// included): all a later run may replace without --force.
	Files []string `json:"files,omitempty"`
}

// RootfsInfo describes the written filesystem.
type RootfsInfo struct {
	File      string `json:"file"`
	SizeBytes int64  `json:"sizeBytes"`
	Entries   int64  `json:"entries"`
	DataBytes int64  `json:"dataBytes"`
	Journal   bool   `json:"journal"`
	Label     string `json:"label"`
}

// Injection records the Gondolin runtime glue added to the image tree.
type Injection struct {
	Applied             bool                   `json:"applied"`
	Note                string                 `json:"note,omitempty"`
	BaseRootfsPath      string                 `json:"baseRootfsPath,omitempty"`
	BaseOrigin          string                 `json:"baseOrigin,omitempty"`
	Base                *gondolin.BaseIdentity `json:"base,omitempty"`
	InjectedFiles       []string               `json:"injectedFiles"`
	InjectedDirectories []string               `json:"injectedDirectories"`
	InjectedSymlinks    []string               `json:"injectedSymlinks,omitempty"`
	Moved               []guest.Move           `json:"moved,omitempty"`
	Kept                []string               `json:"kept,omitempty"`
	// Entrypoint runs the image's ENTRYPOINT/CMD with its env, workdir
	// and user: vm.exec(["/usr/bin/docker2vm-entrypoint", ...args]).
	Entrypoint string   `json:"entrypoint,omitempty"`
	Notes      []string `json:"notes,omitempty"`
}

// hostname names the guest when the image does not: the first 12 hex digits
// of its config digest, as Docker names a container by its id. The same
// image gets the same name from any source.
func hostname(img *image.Image) string {
	if h := img.ConfigDigest.Hex; len(h) >= 12 {
		return h[:12]
	}
	return ""
}

// buildTime dates an assets manifest reproducibly: the image's creation
// time, else SOURCE_DATE_EPOCH, else the Unix epoch.
func buildTime(img *image.Image, sde int64) time.Time {
	if sde > 0 {
		return time.Unix(sde, 0).UTC()
	}
	if img.Config != nil && !img.Config.Created.IsZero() {
		return img.Config.Created.UTC()
	}
	return time.Unix(0, 0).UTC()
}

// readGlue reads Gondolin's runtime glue from the base's rootfs.ext4 with
// our own ext4 reader, storing file data through store.
func readGlue(ctx context.Context, base *gondolin.Base, store fstree.Store) (*guest.Glue, error) {
	f, err := os.Open(base.RootfsPath)
	if err != nil {
		return nil, &hint.Error{Msg: "cannot open the Gondolin base rootfs", Err: err,
			Fixes: []string{"Check the base bundle in " + base.Dir + ", or pass another with --base DIR."}}
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	fs, err := ext4.Open(f, st.Size())
	if err != nil {
		return nil, &hint.Error{Msg: "cannot read the Gondolin base rootfs " + base.RootfsPath, Err: err,
			Fixes: []string{"The base bundle is damaged: fetch it again (gondolin image pull) or pass another with --base DIR."}}
	}
	glue, err := guest.ReadGlue(ctx, glueSource{fs}, base.Arch, store)
	var se *ext4.SizeError
	if errors.As(err, &se) {
		return nil, explainSize(se) // not the base's fault
	}
	if err != nil {
		return nil, fmt.Errorf("reading runtime glue from %s: %w", base.RootfsPath, err)
	}
	return glue, nil
}

// glueSource adapts the ext4 reader to guest.GlueSource.
type glueSource struct{ fs *ext4.FS }

func (g glueSource) Lstat(p string) (*fstree.Inode, error) {
	n, err := g.fs.Lookup(p)
	if err != nil {
		return nil, err
	}
	out := &fstree.Inode{Type: n.Type, Mode: n.Mode, UID: n.UID, GID: n.GID, Mtime: n.Mtime, Atime: n.Atime, Ctime: n.Ctime,
		Major: n.Major, Minor: n.Minor}
	if n.Type == fstree.TypeSymlink {
		if out.Target, err = g.fs.Readlink(p); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (g glueSource) Extract(ctx context.Context, p string, store fstree.Store) (*fstree.Inode, error) {
	return g.fs.Extract(ctx, p, store)
}

// Run converts the image and publishes the output directory. On failure the
// output directory is left as it was.
func Run(ctx context.Context, opts Options) (res *Result, err error) {
	if err := validate(opts); err != nil {
		return nil, err
	}
	if err := checkOut(opts); err != nil {
		return nil, err
	}
	defer startProfile()()
	progress := opts.progressf()
	j, err := prepare(ctx, opts, progress)
	if err != nil {
		return nil, explainFull(err, opts)
	}
	defer j.close()
	st, err := newStaging(ctx, opts.OutDir, opts.Force, guardedPaths(opts), progress)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			st.discard()
			err = explainFull(err, opts)
		}
	}()
	res, done, err := build(ctx, j, st)
	if err != nil {
		return nil, err
	}
	if err := commit(ctx, opts, []string{st.dir}, []*Result{res}, progress); err != nil {
		return nil, err
	}
	if err := st.publish(); err != nil {
		return nil, err
	}
	progress("published %s", st.out)
	done()
	trimCache(opts, progress)
	return res, nil
}

// trimCache keeps the cache directory under opts.CacheMax after a run.
// Best effort: a cache that cannot be trimmed only stays larger.
func trimCache(opts Options, progress func(string, ...any)) {
	if opts.Image.NoCache || opts.CacheMax < 0 {
		return
	}
	root, err := opts.Image.CacheRoot()
	if err != nil {
		return
	}
	max := opts.CacheMax
	if max == 0 {
		max = cachedir.DefaultMax
	}
	r, err := cachedir.Trim(root, max, false)
	if err != nil {
		progress("cache: not trimmed: %v", err)
		return
	}
	if len(r.Entries) > 0 {
		progress("cache: removed %d least recently used entries (%s) to stay under %s; --cache-max sets the limit",
			len(r.Entries), units.Bytes(r.Bytes), units.Bytes(max))
	}
}

// job is one platform's conversion, resolved and ready to build.
type job struct {
	opts     Options
	img      *image.Image
	base     *gondolin.Base // nil with --plain
	progress func(string, ...any)
}

func (j *job) close() { j.img.Close() }

// prepare resolves the image for opts.Image.Platform and finds its base.
func prepare(ctx context.Context, opts Options, progress func(string, ...any)) (*job, error) {
	img, err := image.Resolve(ctx, opts.Source, opts.Image)
	if err != nil {
		return nil, err
	}
	progress("resolved %s %s (%s, %d layers)", describeSource(opts.Source), img.Digest, img.Platform.String(), len(img.Layers))
	j := &job{opts: opts, img: img, progress: progress}
	if !opts.Plain {
		bo := opts.Base
		bo.Platform = img.Platform.String()
		if bo.Progress == nil {
			bo.Progress = opts.Progress
		}
		if j.base, err = gondolin.FindBase(ctx, bo); err != nil {
			img.Close()
			return nil, err
		}
		progress("Gondolin base: %s (%s)", j.base.Dir, j.base.Origin)
	}
	return j, nil
}

// explainFull explains a run that ran out of room: in the rootfs.ext4
// --size asked for (explainSize), or on a disk (explainNoSpace).
func explainFull(err error, opts Options) error {
	var se *ext4.SizeError
	if errors.As(err, &se) {
		return explainSize(se)
	}
	return explainNoSpace(err, opts)
}

// explainSize says that --size, not the image or the base, is at fault.
func explainSize(se *ext4.SizeError) error {
	return &hint.Error{Msg: fmt.Sprintf("--size %s is too small for the guest: it needs more than %s", units.Bytes(se.Size), units.Bytes(se.Need)),
		Fixes: []string{"Raise --size, or omit it to size rootfs.ext4 to the image plus headroom."}}
}

// explainNoSpace turns running out of space into an error that names the
// filesystem that filled up (the output's, the cache's, the temporary
// directory's, Gondolin's image store's or the publish directory's: the
// one holding the file whose write failed) and how to make room there.
func explainNoSpace(err error, opts Options) error {
	if !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT) {
		return err
	}
	out := opts.OutDir
	if abs, err := filepath.Abs(out); err == nil {
		out = filepath.Dir(abs)
	}
	places := []struct{ dir, what, fix string }{
		{out, "the output's filesystem", "Free space on the filesystem holding " + out + ", or choose another --out."},
		{opts.Image.CacheDir, "the cache directory's filesystem", "Free space where the cache lives (" + opts.Image.CacheDir +
			"): `docker2vm cache prune`, a lower --cache-max or --cache-dir on a larger filesystem; or convert with --no-cache."},
		{os.TempDir(), "the temporary directory's filesystem", "Free space in the temporary directory " + os.TempDir() +
			", or point TMPDIR at a larger filesystem (with --no-cache, downloads wait there)."},
		{opts.Base.StoreDir(), "the filesystem of Gondolin's image store", "Free space in Gondolin's image store (" + opts.Base.StoreDir() +
			"): `gondolin image rm` what you do not need, or set GONDOLIN_IMAGE_STORE to a larger filesystem."},
		{opts.Publish, "the publish directory's filesystem", "Free space where --publish writes (" + opts.Publish + "), or publish elsewhere."},
	}
	best := 0
	if p := errPath(err); p != "" {
		longest := -1
		for i, pl := range places {
			if pl.dir != "" && isAncestorOrSame(pl.dir, p) && len(pl.dir) > longest {
				best, longest = i, len(pl.dir)
			}
		}
	}
	pl := places[best]
	fixes := []string{pl.fix}
	if best == 0 {
		fixes = append(fixes, "meta.json of an earlier conversion of this image shows the size it needs (rootfs.sizeBytes); the file is sparse, so it takes less.")
	}
	return &hint.Error{Msg: "out of disk space on " + pl.what + " (" + pl.dir + ")", Err: err, Fixes: fixes}
}

// errPath is the path of the file operation that failed in err's chain.
func errPath(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Path
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.New
	}
	return ""
}

// build writes j's output into st (not published) and returns the result
// it will have once published, and what to do after publishing.
func build(ctx context.Context, j *job, st *staging) (*Result, func(), error) {
	opts, img, base, progress := j.opts, j.img, j.base, j.progress
	rootfsPath := st.path(RootfsFile)
	// The result cache (resultcache.go): registry sources with the blob
	// cache on reuse an earlier identical conversion's rootfs.ext4.
	rcache := openResultCache(ctx, opts, img, base, progress)
	record := func(res *Result) func() {
		return func() {
			if rcache != nil {
				rcache.recordOutput(res.OutDir, res.RootfsPath)
			}
		}
	}
	if rcache != nil {
		cached, hit, kept, err := rcache.lookup(ctx, rootfsPath, st.previous(RootfsFile))
		if err != nil {
			return nil, nil, err
		}
		if hit {
			if kept {
				progress("kept the unchanged %s of %s, the result of an identical conversion (key %s)", RootfsFile, st.out, rcache.shortKey())
			} else {
				progress("reused the result of an earlier identical conversion (key %s)", rcache.shortKey())
			}
			var id *gondolin.BaseIdentity
			if base != nil {
				v, err := base.Identity(ctx)
				if err != nil {
					return nil, nil, err
				}
				id = &v
			}
			res, err := finishRun(ctx, opts, st, img, base, cachedMetadata(cached.Metadata, opts, describe(img), base, id), cached.RootfsSHA256, progress)
			if err != nil {
				return nil, nil, err
			}
			return res, record(res), nil
		}
	}
	meta, err := writeRootfs(ctx, opts, img, base, rootfsPath, progress)
	if err != nil {
		return nil, nil, err
	}
	// manifest.json records rootfs.ext4's sha256: computed here once, so
	// that the cache entry carries it and a hit need not read the file.
	rootfsSum := ""
	if opts.Mode == ModeAssets {
		if rootfsSum, err = gondolin.HashFile(ctx, rootfsPath); err != nil {
			return nil, nil, fmt.Errorf("hashing %s: %w", rootfsPath, err)
		}
	}
	if rcache != nil {
		if err := rcache.store(ctx, rootfsPath, meta, rootfsSum); err != nil {
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			progress("result cache: not stored: %v", err)
		}
	}
	res, err := finishRun(ctx, opts, st, img, base, meta, rootfsSum, progress)
	if err != nil {
		return nil, nil, err
	}
	return res, record(res), nil
}

// rootfsRun is a conversion's image file, its writer, the base's glue
// (nil for --plain) and the merge, either new or resumed after from
// layers (the prefix cache, prefixcache.go).
type rootfsRun struct {
	f      *os.File
	w      *ext4.Writer
	glue   *guest.Glue
	m      *rootfs.Merger
	from   int
	pc     *prefixCache // nil when the run may not use one
	glueCP []byte       // the writer's checkpoint after the glue, for pc
	key    string       // the prefix cache entry it resumed from
}

// startRootfs makes rootfsPath and the writer and merge that fill it:
// from the longest prefix of the image's layers the prefix cache holds,
// else from nothing.
func startRootfs(ctx context.Context, opts Options, img *image.Image, base *gondolin.Base, rootfsPath string,
	progress func(string, ...any)) (*rootfsRun, error) {
	var glueOf func(*ext4.Writer) (*guest.Glue, error)
	if base != nil {
		glueOf = func(w *ext4.Writer) (*guest.Glue, error) { return readGlue(ctx, base, w) }
	}
	rr := &rootfsRun{pc: openPrefixCache(ctx, opts, img, base, progress)}
	if rr.pc != nil {
		r, err := rr.pc.lookup(ctx, rootfsPath, opts, glueOf)
		if err != nil {
			return nil, err
		}
		if r != nil {
			progress("reused the merged state after %s (prefix cache, key %s)",
				image.LayerName(r.from-1, len(img.Layers), img.Layers[r.from-1].Digest.String()), r.key[:16])
			r.pc = rr.pc
			return r, nil
		}
	}
	f, err := os.OpenFile(rootfsPath, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", rootfsPath, err)
	}
	fail := func(err error) (*rootfsRun, error) { f.Close(); return nil, err }
	rr.f = f
	if rr.w, err = ext4.NewWriter(f, opts.FS); err != nil {
		return fail(err)
	}
	if glueOf != nil {
		if rr.glue, err = glueOf(rr.w); err != nil {
			return fail(err)
		}
	}
	if rr.pc != nil {
		if rr.glueCP, err = rr.w.Checkpoint(); err != nil {
			return fail(err)
		}
	}
	rr.m = rootfs.New(rr.w, opts.Limits)
	return rr, nil
}

// afterLayer is what runs after layer i is applied: storing the state
// when it is the prefix the cache keeps (best effort).
func (rr *rootfsRun) afterLayer(ctx context.Context, progress func(string, ...any)) func(i int) error {
	return func(i int) error {
		if rr.pc == nil || i+1 != rr.pc.storeAt() {
			return nil
		}
		if err := rr.pc.store(ctx, i+1, rr.f, rr.w, rr.m, rr.glueCP); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			progress("prefix cache: not stored: %v", err)
		}
		return nil
	}
}

// writeRootfs merges the image's layers (and the runtime glue of base, if
// any) into a new ext4 image at rootfsPath, synced, and returns the
// conversion's Metadata.
//
// Long: the writer's setup, the layer loop and the finishing steps share
// the open rootfs file, its cleanup on failure and the progress lines.
func writeRootfs(ctx context.Context, opts Options, img *image.Image, base *gondolin.Base, rootfsPath string,
	progress func(string, ...any)) (Metadata, error) {
	rr, err := startRootfs(ctx, opts, img, base, rootfsPath, progress)
	if err != nil {
		return Metadata{}, err
	}
	f, w, glue, m := rr.f, rr.w, rr.glue, rr.m
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	if err := applyLayers(ctx, img, m, rr.from, rr.afterLayer(ctx, progress), progress); err != nil {
		return Metadata{}, err
	}
	info := describe(img)
	injection := Injection{Applied: false, Note: "plain image tree (--plain): no Gondolin runtime glue",
		InjectedFiles: []string{}, InjectedDirectories: []string{}}
	if glue != nil {
		inj, err := guest.Inject(m.Tree(), glue, guest.ImageConfig{
			Env: info.Config.Env, WorkingDir: info.Config.WorkingDir, User: info.Config.User,
			Entrypoint: info.Config.Entrypoint, Cmd: info.Config.Cmd, Hostname: hostname(img),
		}, w.Release)
		if err != nil {
			return Metadata{}, err
		}
		id, err := base.Identity(ctx)
		if err != nil {
			return Metadata{}, err
		}
		injection = Injection{Applied: true, BaseRootfsPath: base.RootfsPath, BaseOrigin: base.Origin, Base: &id,
			InjectedFiles: inj.Files, InjectedDirectories: inj.Dirs, InjectedSymlinks: inj.Symlinks,
			Moved: inj.Moved, Kept: inj.Kept, Entrypoint: inj.Entrypoint, Notes: inj.Notes}
		progress("added Gondolin runtime glue: %d files, %d directories, %d symlinks", len(inj.Files), len(inj.Dirs), len(inj.Symlinks))
		if glue.Agents[guest.SandboxfsPath] == nil {
			progress("warning: %s", guest.NoSandboxfsNote)
		}
	}
	if err := w.Finish(ctx, m.Tree()); err != nil {
		return Metadata{}, err
	}
	if err := f.Sync(); err != nil {
		return Metadata{}, fmt.Errorf("writing %s: %w", rootfsPath, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return Metadata{}, err
	}
	if err := f.Close(); err != nil {
		return Metadata{}, fmt.Errorf("writing %s: %w", rootfsPath, err)
	}
	f = nil
	stats := m.Stats()
	progress("wrote %s (%d layer entries merged, %d MiB apparent size, sparse)", RootfsFile, stats.Entries, fi.Size()>>20)

	label := opts.FS.Label
	if label == "" {
		label = "gondolin-root" // the ext4 writer's default
	}
	meta := Metadata{
		SchemaVersion: 1,
		GeneratedAt:   now(opts).UTC().Format(time.RFC3339),
		Generator:     "docker2vm",
		Source:        opts.sourceInfo(),
		SourceDigest:  info.Digest,
		IndexDigest:   info.IndexDigest,
		Platform:      info.Platform,
		Mode:          opts.Mode,
		Runtime:       info.Config,
		Labels:        info.Labels,
		Layers:        info.Layers,
		Rootfs: RootfsInfo{File: RootfsFile, SizeBytes: fi.Size(), Entries: stats.Entries, DataBytes: stats.Bytes,
			Journal: !opts.FS.NoJournal, Label: label},
		RuntimeInjection: injection,
	}
	return meta, nil
}

// applyLayers merges every layer of img, in order.
func applyLayers(ctx context.Context, img *image.Image, m *rootfs.Merger, from int, after func(i int) error, progress func(string, ...any)) error {
	for i := from; i < len(img.Layers); i++ {
		l := img.Layers[i]
		if err := ctx.Err(); err != nil {
			return err
		}
		start := time.Now()
		rc, err := img.OpenLayer(ctx, i)
		if err != nil {
			return err
		}
		aerr := m.Apply(ctx, image.LayerName(i, len(img.Layers), l.Digest.String()), rc)
		if aerr != nil && (errors.Is(aerr, rootfs.ErrLimit) || ctx.Err() != nil) {
			// A limit or an interrupt: stop the download and the
			// decompressor now rather than read the rest.
			image.AbortLayer(rc)
			return aerr
		}
		cerr := rc.Close()
		if aerr != nil {
			// Close finishes the digest checks: a corrupt blob, or one
			// the network cut short, is reported as such, not as
			// whatever the merge tripped on.
			if errors.Is(cerr, image.ErrDigestMismatch) || errors.Is(cerr, image.ErrNetwork) {
				return cerr
			}
			return aerr
		}
		if cerr != nil {
			return cerr
		}
		progress("applied %s in %s", image.LayerName(i, len(img.Layers), l.Digest.String()), time.Since(start).Round(time.Millisecond))
		if err := after(i); err != nil {
			return err
		}
	}
	return nil
}

// finishRun writes meta.json and the assets into the staging directory,
// whose rootfs.ext4 is complete, and imports it (--tag). rootfsSum is that
// file's sha256 for manifest.json when known ("" hashes it).
func finishRun(ctx context.Context, opts Options, st *staging, img *image.Image, base *gondolin.Base, meta Metadata,
	rootfsSum string, progress func(string, ...any)) (*Result, error) {
	rootfsPath := st.path(RootfsFile)
	info := ImageInfo{Digest: meta.SourceDigest, Platform: meta.Platform}
	manifestPath := ""
	if opts.Mode == ModeAssets {
		src := gondolin.OCISource{Image: opts.sourceName(), Runtime: "docker2vm", Platform: info.Platform, PullPolicy: "never", Digest: info.Digest}
		if _, err := gondolin.WriteAssets(ctx, st.dir, base, rootfsPath, gondolin.AssetOptions{
			RootfsMode: opts.RootfsMode, OCISource: &src, BuildTime: buildTime(img, opts.FS.SourceDateEpoch), RootfsSHA256: rootfsSum,
		}); err != nil {
			return nil, err
		}
		manifestPath = filepath.Join(st.out, gondolin.ManifestName)
		progress("wrote Gondolin assets (kernel, initramfs, manifest.json)")
	}
	// meta.json last, listing every file of the output (itself included):
	// what a later run may replace without --force.
	files, err := listFiles(st.dir)
	if err != nil {
		return nil, err
	}
	files = append(files, MetadataFile)
	sort.Strings(files)
	meta.Files = files
	if err := writeJSON(st.path(MetadataFile), meta); err != nil {
		return nil, err
	}
	for i, name := range files {
		files[i] = filepath.Join(st.out, name)
	}
	return &Result{
		Command:           opts.Command,
		Source:            opts.sourceInfo(),
		SourceDigest:      info.Digest,
		Platform:          info.Platform,
		Mode:              opts.Mode,
		OutDir:            st.out,
		RootfsPath:        filepath.Join(st.out, RootfsFile),
		MetadataPath:      filepath.Join(st.out, MetadataFile),
		AssetManifestPath: manifestPath,
		Files:             files,
	}, nil
}

// commit makes a conversion's effects outside --out, once everything that
// can fail in building the outputs in dirs (their staging directories) is
// done and before --out is published, in an order that keeps Gondolin's
// image store and registry consistent: the guests' objects go into the
// store (no ref moves yet), the registry gets every archive and then one
// new document, and the tag's refs in the store move together, under the
// registry's lock (so concurrent publishers of a tag leave the two naming
// the same builds); refs that cannot move put the document back. A failure
// before the refs move changes neither the store's refs nor the document.
func commit(ctx context.Context, opts Options, dirs []string, results []*Result, progress func(string, ...any)) error {
	if opts.Tag == "" {
		return nil
	}
	store := opts.Base.StoreDir()
	storeErr := func(err error) error {
		return &hint.Error{Msg: fmt.Sprintf("importing the guest into Gondolin's image store %s as %s", store, opts.Tag), Err: err,
			Fixes: []string{"Check that " + store + " is writable (GONDOLIN_IMAGE_STORE chooses another), or drop --tag."}}
	}
	objs, err := gondolin.ImportObjects(ctx, dirs, store)
	if err != nil {
		return storeErr(err)
	}
	setRefs := func() error {
		if err := gondolin.SetRefs(store, opts.Tag, objs); err != nil {
			return storeErr(err)
		}
		return nil
	}
	if opts.Publish != "" {
		ps, err := gondolin.PublishAll(ctx, dirs, gondolin.PublishOptions{Dir: opts.Publish, Ref: opts.Tag, BaseURL: opts.PublishURL,
			Progress: progress, Then: setRefs})
		if err != nil {
			return err
		}
		for i, p := range ps {
			results[i].Published = p
		}
	} else if err := setRefs(); err != nil {
		return err
	}
	for i, obj := range objs {
		results[i].Imported = &Imported{Tag: opts.Tag, Store: store, Object: obj}
		progress("imported as %s (%s)", opts.Tag, obj)
	}
	return nil
}

// now dates meta.json: opts.Now, else SOURCE_DATE_EPOCH (so that the
// whole output is reproducible), else the current time.
func now(opts Options) time.Time {
	if opts.Now != nil {
		return opts.Now()
	}
	if opts.FS.SourceDateEpoch > 0 {
		return time.Unix(opts.FS.SourceDateEpoch, 0)
	}
	return time.Now()
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

func listFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names, nil
}
