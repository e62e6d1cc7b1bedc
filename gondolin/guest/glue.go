package guest

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"path"
	"slices"
	"strings"

	"github.com/docker2vm/docker2vm/fstree"
	"github.com/docker2vm/docker2vm/gondolin"
	"github.com/docker2vm/docker2vm/gondolin/setuser"
	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/internal/confine"
)

// GlueSource is read-only access to the base bundle's rootfs. The ext4
// reader satisfies it through a small adapter (see ReadGlue). Paths are
// absolute, slash-separated and contain no symlinks except possibly the
// last component: ReadGlue resolves symlinks itself, confined to the base.
type GlueSource interface {
	// Lstat returns the inode at path without following a final symlink.
	// Only metadata is needed (Type, Mode, UID, GID, times, Target for a
	// symlink); Content and Children may be left empty. A missing path is
	// an error wrapping fs.ErrNotExist.
	Lstat(path string) (*fstree.Inode, error)
	// Extract copies path into store: a file with its content, a symlink
	// as a symlink, a directory with everything below it.
	Extract(ctx context.Context, path string, store fstree.Store) (*fstree.Inode, error)
}

// Paths of Gondolin's runtime in its rootfs.
const (
	InitPath           = "/init"
	SandboxdPath       = "/usr/bin/sandboxd"
	SandboxfsPath      = "/usr/bin/sandboxfs"
	SandboxsshPath     = "/usr/bin/sandboxssh"
	SandboxingressPath = "/usr/bin/sandboxingress"
	ModulesDir         = "/lib/modules"
	ImageEnvPath       = "/etc/profile.d/gondolin-image-env.sh"
	EntrypointPath     = "/usr/bin/docker2vm-entrypoint"
	// PrivateDir holds what we add that has no standard place: base
	// binaries (busybox, kmod) that applet symlinks point at, the user
	// switcher only our entrypoint script uses, and an image's own /init
	// when it had to make way for Gondolin's.
	PrivateDir    = "/usr/lib/docker2vm"
	PrivateBinDir = PrivateDir + "/bin"
	ImageInitPath = PrivateDir + "/image-init"
	// SetuserPath is docker2vm-setuser (package setuser), added for an
	// image whose USER is not root.
	SetuserPath = PrivateBinDir + "/" + setuser.Name
)

// NoSandboxfsNote says what a guest converted with a base that has no
// sandboxfs lacks, and what to do about it.
const NoSandboxfsNote = "the base has no " + SandboxfsPath + ", so the guest cannot serve Gondolin's filesystem (/data and the mounts option): " +
	"Gondolin's CLI, and VM.create unless given vfs: null, wait for it before every command and fail with \"vfs mount /data not ready\"; " +
	"boot it with VM.create({ vfs: null, ... }), or convert with a base that has sandboxfs (gondolin image pull alpine-base:latest)"

// AgentPaths are Gondolin's guest binaries. Only sandboxd (the exec agent)
// is required: the others are added when the base has them (a base
// without sandboxfs serves hosts that boot with vfs: null).
var AgentPaths = []string{SandboxdPath, SandboxfsPath, SandboxsshPath, SandboxingressPath}

// InitTools are the commands Gondolin's rootfs /init runs (PATH
// /usr/sbin:/usr/bin:/sbin:/bin).
var InitTools = []string{"sh", "mount", "mkdir", "chmod", "cat", "basename", "tr", "mknod", "ln", "ls", "grep", "seq", "sleep", "modprobe", "cp"}

// initPATH is the search order of Gondolin's init.
var initPATH = []string{"/usr/sbin", "/usr/bin", "/sbin", "/bin"}

// muslLibPath is musl's default library search path.
var muslLibPath = []string{"/lib", "/usr/local/lib", "/usr/lib"}

// Glue is what Inject adds to an image, as read from a base rootfs. Every
// inode's content is in the Store given to ReadGlue.
type Glue struct {
	// Arch is the base's architecture, x86_64 or aarch64: the guest's,
	// which the programs Inject adds (the user switcher) must match.
	Arch string
	// Init is Gondolin's rootfs /init (made to source the image env
	// file before starting sandboxd, when the base's did not).
	Init *fstree.Inode
	// Agents maps AgentPaths present in the base to their files.
	Agents map[string]*fstree.Inode
	// Modules maps a kernel version to its /lib/modules/<kver> subtree.
	Modules map[string]*fstree.Inode
	// Binaries maps a name under PrivateBinDir ("busybox", "kmod") to a
	// base executable that tools resolve to.
	Binaries map[string]*fstree.Inode
	// Tools maps a command name to the base binary (a key of Binaries)
	// that provides it and the directory the base has it in.
	Tools map[string]Tool
	// Libs maps an absolute base path to a file or symlink the Binaries
	// need at run time: the ELF interpreter (the musl loader) and the
	// DT_NEEDED libraries, found on musl's search path.
	Libs map[string]*fstree.Inode
	// Needs maps a key of Binaries to the Libs paths it needs
	// (transitively, symlink hops included).
	Needs map[string][]string
	// Notes are remarks for the user (e.g. /init not patched).
	Notes []string

	store fstree.Store
	spent bool // Inject moved its inodes into a tree
}

// Tool is one command the base provides.
type Tool struct {
	Binary string // key in Glue.Binaries
	Dir    string // where the base has it, e.g. "/bin"
}

// ReadGlue reads Gondolin's runtime glue out of a base rootfs: /init, the
// sandbox binaries, /lib/modules/*, and the tools the init needs (with the
// musl loader and libraries they link). arch is the base's architecture
// (Base.Arch; any name NormalizeArch knows). Content goes to store, which
// Inject later uses for the files it generates.
//
// Adapting the ext4 reader: Extract is (*ext4.FS).Extract; Lstat can be
// written over the reader's directory lookup (metadata only).
func ReadGlue(ctx context.Context, src GlueSource, arch string, store fstree.Store) (*Glue, error) {
	norm := gondolin.NormalizeArch(arch)
	if norm == "" {
		return nil, glueErr(fmt.Sprintf("the base's architecture %q is not x86_64 or aarch64", arch), nil)
	}
	g := &Glue{
		Arch:     norm,
		Agents:   map[string]*fstree.Inode{},
		Modules:  map[string]*fstree.Inode{},
		Binaries: map[string]*fstree.Inode{},
		Tools:    map[string]Tool{},
		Libs:     map[string]*fstree.Inode{},
		Needs:    map[string][]string{},
		store:    store,
	}
	rd := &glueReader{ctx: ctx, src: src, store: store, r: baseResolver{src}, g: g, binPaths: map[string]string{}, direct: map[string][]string{}}
	for _, step := range []func() error{rd.readInit, rd.readAgents, rd.readModules, rd.readTools, rd.readLibs} {
		if err := step(); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// glueReader reads a base's glue, one step at a time (see ReadGlue).
type glueReader struct {
	ctx   context.Context
	src   GlueSource
	store fstree.Store
	r     baseResolver
	g     *Glue

	binPaths map[string]string   // readTools: binary name -> base real path
	direct   map[string][]string // readLibs: base path -> the lib chains it needs
}

// readInit reads Gondolin's /init, patched (patchInit).
func (rd *glueReader) readInit() error {
	real, n, err := rd.r.resolve(InitPath)
	if err != nil || n.Type != fstree.TypeRegular {
		return glueErr("the base rootfs has no /init (Gondolin's boot script)", err)
	}
	data, err := readWhole(rd.ctx, rd.src, real)
	if err != nil {
		return glueErr("reading /init from the base rootfs", err)
	}
	patched, note := patchInit(data)
	if note != "" {
		rd.g.Notes = append(rd.g.Notes, note)
	}
	rd.g.Init, err = putFile(rd.ctx, rd.store, n, patched)
	return err
}

// readAgents reads Gondolin's guest agents: sandboxd must be there, the
// others may not.
func (rd *glueReader) readAgents() error {
	for _, p := range AgentPaths {
		real, n, err := rd.r.resolve(p)
		if errors.Is(err, fs.ErrNotExist) && p != SandboxdPath {
			if p == SandboxfsPath {
				rd.g.Notes = append(rd.g.Notes, NoSandboxfsNote)
			}
			continue
		}
		if err != nil {
			return glueErr("the base rootfs has no "+p, err)
		}
		if n.Type != fstree.TypeRegular {
			return glueErr(fmt.Sprintf("%s in the base rootfs is a %s, not a file", p, n.Type), nil)
		}
		in, err := rd.src.Extract(rd.ctx, real, rd.store)
		if err != nil {
			return glueErr("reading "+p+" from the base rootfs", err)
		}
		rd.g.Agents[p] = in
	}
	return nil
}

// readModules reads the kernel modules, one tree per kernel version.
func (rd *glueReader) readModules() error {
	real, n, err := rd.r.resolve(ModulesDir)
	if err != nil || n.Type != fstree.TypeDir {
		rd.g.Notes = append(rd.g.Notes, "the base rootfs has no /lib/modules: the kernel must have what it needs built in")
		return nil
	}
	mods, err := rd.src.Extract(rd.ctx, real, rd.store)
	if err != nil {
		return glueErr("reading /lib/modules from the base rootfs", err)
	}
	for _, kver := range fstree.SortedNames(mods) {
		if mods.Child(kver).Type == fstree.TypeDir {
			rd.g.Modules[kver] = fstree.Detach(mods, kver)
		}
	}
	return nil
}

// readTools reads the binaries behind the tools Gondolin's init needs.
func (rd *glueReader) readTools() error {
	g := rd.g
	for _, name := range InitTools {
		for _, dir := range initPATH {
			real, n, err := rd.r.resolve(dir + "/" + name)
			if err != nil || n.Type != fstree.TypeRegular {
				continue
			}
			bin := path.Base(real)
			if prev, ok := rd.binPaths[bin]; ok && prev != real {
				bin = strings.TrimPrefix(strings.ReplaceAll(real, "/", "-"), "-")
			}
			if _, ok := g.Binaries[bin]; !ok {
				data, err := readWhole(rd.ctx, rd.src, real)
				if err != nil {
					return glueErr("reading "+real+" from the base rootfs", err)
				}
				if g.Binaries[bin], err = putFile(rd.ctx, rd.store, n, data); err != nil {
					return err
				}
				rd.binPaths[bin] = real
			}
			g.Tools[name] = Tool{Binary: bin, Dir: dir}
			break
		}
	}
	return nil
}

// readLibs reads each binary's libraries, transitively, and records what
// each binary needs.
func (rd *glueReader) readLibs() error {
	for _, bin := range slices.Sorted(maps.Keys(rd.binPaths)) {
		libs, err := rd.depsOf(rd.binPaths[bin])
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, l := range libs {
			if !seen[l] {
				seen[l] = true
				rd.g.Needs[bin] = append(rd.g.Needs[bin], l)
			}
		}
	}
	return nil
}

// depsOf is the library chains the base's ELF file p needs, its
// libraries' included, each read into the glue once.
func (rd *glueReader) depsOf(p string) ([]string, error) {
	if d, ok := rd.direct[p]; ok {
		return d, nil
	}
	rd.direct[p] = nil // cycle guard
	data, err := readWhole(rd.ctx, rd.src, p)
	if err != nil {
		return nil, glueErr("reading "+p+" from the base rootfs", err)
	}
	interp, needed, err := elfDeps(data)
	if err != nil {
		return nil, glueErr("reading the ELF headers of "+p+" in the base rootfs", err)
	}
	var libs []string
	if interp != "" {
		libs = append(libs, interp)
	}
	for _, so := range needed {
		if so == "" || strings.ContainsRune(so, '/') {
			// The loader takes such a name as a path from the current
			// directory, not from its search path.
			return nil, glueErr(fmt.Sprintf("%s in the base rootfs needs %q, which is not a library name", p, so), nil)
		}
		found := ""
		for _, d := range muslLibPath {
			if rd.r.exists(d + "/" + so) {
				found = d + "/" + so
				break
			}
		}
		if found == "" {
			if muslReserved(so) {
				continue // provided by the musl loader itself
			}
			return nil, glueErr(fmt.Sprintf("%s in the base rootfs needs %s, which the base does not have", p, so), nil)
		}
		libs = append(libs, found)
	}
	var out []string
	for _, lib := range libs {
		chain, err := rd.r.chain(lib)
		if err != nil {
			return nil, glueErr("resolving "+lib+" in the base rootfs", err)
		}
		out = append(out, chain...)
		for _, c := range chain {
			if err := rd.readLib(c); err != nil {
				return nil, err
			}
		}
		// The library's own needs.
		sub, err := rd.depsOf(chain[len(chain)-1])
		if err != nil {
			return nil, err
		}
		out = append(out, sub...)
	}
	rd.direct[p] = out
	return out, nil
}

// readLib reads one link of a library chain (a symlink or the file) into
// the glue, once.
func (rd *glueReader) readLib(c string) error {
	g := rd.g
	if _, ok := g.Libs[c]; ok {
		return nil
	}
	ln, err := rd.src.Lstat(c)
	if err != nil {
		return glueErr("reading "+c+" from the base rootfs", err)
	}
	if ln.Type == fstree.TypeSymlink {
		in, err := rd.src.Extract(rd.ctx, c, rd.store)
		if err != nil {
			return glueErr("reading "+c+" from the base rootfs", err)
		}
		g.Libs[c] = in
		return nil
	}
	data, err := readWhole(rd.ctx, rd.src, c)
	if err != nil {
		return glueErr("reading "+c+" from the base rootfs", err)
	}
	g.Libs[c], err = putFile(rd.ctx, rd.store, ln, data)
	return err
}

func glueErr(msg string, err error) error {
	return &hint.Error{Msg: msg, Err: err, Fixes: []string{
		"Use a Gondolin base bundle built by Gondolin (e.g. `gondolin image pull alpine-base:latest`), or pass --base DIR with one.",
	}}
}

// muslReserved reports names musl's loader satisfies itself (libc,
// libpthread, librt, libm, libdl, libutil, libxnet).
func muslReserved(so string) bool {
	for _, p := range []string{"libc.", "libpthread.", "librt.", "libm.", "libdl.", "libutil.", "libxnet."} {
		if strings.HasPrefix(so, p) {
			return true
		}
	}
	return strings.HasPrefix(so, "ld-musl-")
}

// elfDeps returns an ELF file's interpreter and DT_NEEDED names. Data that
// is not ELF (a script) has none.
func elfDeps(data []byte) (interp string, needed []string, err error) {
	if len(data) < 4 || string(data[:4]) != elf.ELFMAG {
		return "", nil, nil
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b, err := io.ReadAll(p.Open())
			if err != nil {
				return "", nil, err
			}
			interp = strings.TrimRight(string(b), "\x00")
		}
	}
	needed, err = f.ImportedLibraries()
	return interp, needed, err
}

const maxGlueFile = 256 << 20

// boundedMemStore is a MemStore that refuses content over max bytes
// before reading any of it.
type boundedMemStore struct {
	fstree.MemStore
	max int64
}

func (s *boundedMemStore) Put(ctx context.Context, r io.Reader, size int64) (fstree.Content, error) {
	if size > s.max {
		return nil, fmt.Errorf("larger than %d bytes (%d)", s.max, size)
	}
	return s.MemStore.Put(ctx, r, size)
}

// readWhole extracts one regular file into memory. The type is checked
// before extracting (a directory would be extracted whole) and the size
// before reading (the store refuses more than maxGlueFile).
func readWhole(ctx context.Context, src GlueSource, p string) ([]byte, error) {
	if n, err := src.Lstat(p); err != nil {
		return nil, err
	} else if n.Type != fstree.TypeRegular {
		return nil, fmt.Errorf("%s is a %s, not a file", p, n.Type)
	}
	ms := &boundedMemStore{max: maxGlueFile}
	n, err := src.Extract(ctx, p, ms)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if n.Type != fstree.TypeRegular {
		return nil, fmt.Errorf("%s is a %s, not a file", p, n.Type)
	}
	if n.Content == nil {
		return nil, nil
	}
	ra, err := ms.Open(n.Content)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, n.Content.Size())
	if _, err := ra.ReadAt(buf, 0); err != nil && err != io.EOF {
		return nil, err
	}
	return buf, nil
}

// putFile stores data as a regular file with meta's ownership, mode, times.
func putFile(ctx context.Context, store fstree.Store, meta *fstree.Inode, data []byte) (*fstree.Inode, error) {
	n := &fstree.Inode{Type: fstree.TypeRegular, Mode: meta.Mode & 0o7777, UID: meta.UID, GID: meta.GID,
		Mtime: meta.Mtime, Atime: meta.Atime, Ctime: meta.Ctime}
	if len(data) > 0 {
		c, err := store.Put(ctx, bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return nil, err
		}
		n.Content = c
	}
	return n, nil
}

// envSourceSnippet makes Gondolin's init load the image environment.
const envSourceSnippet = "# Load the image's environment (added by docker2vm)\n" +
	"if [ -r " + ImageEnvPath + " ]; then\n" +
	"  . " + ImageEnvPath + "\n" +
	"fi\n"

// patchInit makes the base's /init source the image env file before it
// starts sandboxd. Gondolin 0.12 adds that only to images built with a
// default environment, so a stock base may lack it.
func patchInit(data []byte) ([]byte, string) {
	if bytes.Contains(data, []byte(ImageEnvPath)) {
		return data, ""
	}
	lines := strings.SplitAfter(string(data), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.TrimSpace(lines[i]) == "exec /usr/bin/sandboxd" {
			out := strings.Join(lines[:i], "") + envSourceSnippet + "\n" + strings.Join(lines[i:], "")
			return []byte(out), ""
		}
	}
	return data, "the base's /init does not `exec /usr/bin/sandboxd` as expected; it was left as is and may not load " + ImageEnvPath
}

// baseResolver resolves paths in a GlueSource by confine's rules: symlinks
// are followed within the base (absolute targets restart at the base root,
// ".." stops there), as the base's own kernel and loader follow them.
type baseResolver struct{ src GlueSource }

// baseNode is an entry of the base: its real path and metadata.
type baseNode struct {
	path string
	in   *fstree.Inode
}

// baseFS is a GlueSource as confine.Resolve walks it: one Lstat per entry,
// on real paths only (no symlinks in them).
type baseFS struct{ src GlueSource }

func (b baseFS) Child(dir baseNode, name string) (baseNode, confine.Kind, error) {
	p := path.Join(dir.path, name)
	n, err := b.src.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return baseNode{}, confine.Missing, nil
	}
	if err != nil {
		return baseNode{}, confine.Missing, err
	}
	return baseNode{p, n}, n.Type.Kind(), nil
}

func (b baseFS) Target(n baseNode) (string, error) { return n.in.Target, nil }

func (b baseFS) Mkdir(dir baseNode, name, p string) (baseNode, error) {
	return baseNode{}, fmt.Errorf("%s: the base rootfs is read-only", p)
}

func (b baseFS) Describe(n baseNode) string { return n.in.Type.String() }

// lookup resolves p with opts; a missing final entry is an error wrapping
// fs.ErrNotExist.
func (r baseResolver) lookup(p string, opts confine.Options) (baseNode, error) {
	root, err := r.src.Lstat("/")
	if err != nil {
		return baseNode{}, err
	}
	opts.Path = true
	res, err := confine.Resolve(baseFS(r), baseNode{"/", root}, p, opts)
	if err != nil {
		return baseNode{}, err
	}
	if res.Kind == confine.Missing {
		return baseNode{}, &confine.Error{Err: confine.ErrNotExist, Path: res.Path}
	}
	return res.Node, nil
}

// resolve follows every symlink and returns the real path and its inode.
func (r baseResolver) resolve(p string) (string, *fstree.Inode, error) {
	n, err := r.lookup(p, confine.Options{FollowLast: true})
	return n.path, n.in, err
}

// exists reports whether p names an entry (a dangling symlink too).
func (r baseResolver) exists(p string) bool {
	_, err := r.lookup(p, confine.Options{})
	return err == nil
}

// chain returns the real paths visited resolving p's final component: the
// entry p names, then each symlink hop, ending at a non-symlink.
func (r baseResolver) chain(p string) ([]string, error) {
	var links []string
	n, err := r.lookup(p, confine.Options{FollowLast: true, Links: &links})
	if err != nil {
		return nil, err
	}
	return append(links, n.path), nil
}

// TreeSource is a GlueSource over an in-memory tree whose content is in
// Store (which must implement fstree.Opener). Tests use it; so can a
// caller that already has a base rootfs as a tree.
type TreeSource struct {
	Tree  *fstree.Tree
	Store fstree.Store
}

// Lstat implements GlueSource.
func (s TreeSource) Lstat(p string) (*fstree.Inode, error) {
	n, ok := s.Tree.Lookup(strings.TrimPrefix(path.Clean("/"+p), "/"))
	if !ok {
		return nil, fmt.Errorf("%s: %w", p, fs.ErrNotExist)
	}
	return n, nil
}

// Extract implements GlueSource, copying content into store.
func (s TreeSource) Extract(ctx context.Context, p string, store fstree.Store) (*fstree.Inode, error) {
	n, err := s.Lstat(p)
	if err != nil {
		return nil, err
	}
	op, ok := s.Store.(fstree.Opener)
	if !ok {
		return nil, fmt.Errorf("TreeSource store %T cannot be read back", s.Store)
	}
	copies := map[*fstree.Inode]*fstree.Inode{} // hardlinks stay hardlinks
	var cp func(n *fstree.Inode) (*fstree.Inode, error)
	cp = func(n *fstree.Inode) (*fstree.Inode, error) {
		if c, ok := copies[n]; ok {
			return c, nil
		}
		c := n.CopyMeta()
		if n.Type == fstree.TypeDir {
			for _, name := range fstree.SortedNames(n) {
				cc, err := cp(n.Child(name))
				if err != nil {
					return nil, err
				}
				fstree.Link(c, name, cc, nil)
			}
		}
		if n.Content != nil {
			ra, err := op.Open(n.Content)
			if err != nil {
				return nil, err
			}
			c.Content, err = store.Put(ctx, io.NewSectionReader(ra, 0, n.Content.Size()), n.Content.Size())
			if err != nil {
				return nil, err
			}
		}
		copies[n] = c
		return c, nil
	}
	return cp(n) // detached: the caller's fstree.Link names it
}
