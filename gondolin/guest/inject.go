package guest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/docker2vm/docker2vm/fstree"
	"github.com/docker2vm/docker2vm/gondolin/setuser"
	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/internal/confine"
)

// ImageConfig is the part of the OCI image config a guest needs.
type ImageConfig struct {
	Env        []string
	WorkingDir string
	User       string
	Entrypoint []string
	Cmd        []string
	// Hostname is the guest's host name when the image's /etc/hostname is
	// empty or absent (Docker names a container by its id; convert uses
	// the image's config digest). "" means DefaultHostname.
	Hostname string
}

// DefaultHostname is the host name written when neither the image nor
// ImageConfig names one.
const DefaultHostname = "gondolin"

// Injection lists what Inject changed, as real absolute paths inside the
// image (after resolving the image's own symlinks), for meta.json. A
// directory listed in Dirs that came from the base (a /lib/modules/<kver>)
// was added with everything below it.
type Injection struct {
	Files    []string `json:"files"`
	Dirs     []string `json:"directories"`
	Symlinks []string `json:"symlinks"`
	// Moved lists image entries moved out of the way (only an image's own
	// /init, which must make way for Gondolin's).
	Moved []Move `json:"moved,omitempty"`
	// Kept lists glue paths where the image's own entry was kept.
	Kept []string `json:"kept,omitempty"`
	// Entrypoint is the script that runs the image's ENTRYPOINT/CMD.
	Entrypoint string   `json:"entrypoint"`
	Notes      []string `json:"notes,omitempty"`
}

// Move is one relocated image entry.
type Move struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// requiredDirs must exist for Gondolin's init (and for readonly rootfs
// mode, where init cannot create them), with the modes used when missing.
var requiredDirs = []struct {
	path string
	mode uint32
}{
	{"/proc", 0o555}, {"/sys", 0o555}, {"/dev", 0o755}, {"/run", 0o755},
	{"/tmp", 0o1777}, {"/var/tmp", 0o1777}, {"/var/cache", 0o755}, {"/var/log", 0o755},
	{"/root", 0o700}, {"/home", 0o755}, {"/data", 0o755},
	{"/etc/gondolin", 0o755}, {"/etc/gondolin/mitm", 0o755},
}

// softTools may be missing: init tolerates their failure.
var softTools = map[string]bool{"modprobe": true, "ls": true}

// Inject adds Gondolin's runtime glue to an image tree, never replacing an
// image file (the one exception: an image's own /init is moved to
// ImageInitPath, because Gondolin's initramfs always runs /init). It
// fails if the image has its own Gondolin agent binaries. Generated files
// (the env file, the entrypoint script) are stored in the store given to
// ReadGlue; glue content that is not used is passed to release (may be
// nil). Inject moves the glue's inodes into img, so a Glue serves one
// Inject (one that fails before it adds anything leaves it unused): read
// it again for another tree. On error img is left half-changed and must be
// discarded.
func Inject(img *fstree.Tree, glue *Glue, cfg ImageConfig, release func(fstree.Content)) (*Injection, error) {
	if img == nil || img.Root == nil || glue == nil || glue.Init == nil {
		return nil, errors.New("gondolin.Inject: nil tree or glue")
	}
	if glue.spent {
		return nil, errors.New("gondolin.Inject: the glue was injected into a tree already (read it again with ReadGlue)")
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	r := &imgResolver{t: img, inj: &Injection{Entrypoint: EntrypointPath, Notes: slices.Clone(glue.Notes)}, placed: map[*fstree.Inode]bool{}, now: img.Root.Mtime}
	// Fail early on what cannot be fixed without replacing image files.
	if err := r.refuseTaken(); err != nil {
		return nil, err
	}
	if err := r.moveImageInit(); err != nil {
		return nil, err
	}
	glue.spent = true // from here on its inodes move into img
	// The steps, in order; each adds what is missing and keeps what the
	// image has.
	for _, step := range []func() error{
		func() error { _, err := r.addFile(InitPath, glue.Init); return err }, // Gondolin's /init
		func() error { // sandboxd, sandboxfs, ...
			if glue.Agents[SandboxdPath] == nil {
				return glueErr("the base has no "+SandboxdPath, nil)
			}
			return r.addAgents(glue)
		},
		r.addRequiredDirs,
		func() error { return r.addModules(glue) },
		func() error { return r.addTools(glue) },
		func() error { return r.addHostFiles(glue, cfg.Hostname) },
		func() error { return r.addUserSwitcher(glue, cfg.User) },
		func() error { return r.addEnv(glue, cfg.Env) },
		func() error { return r.addEntrypoint(glue, cfg) },
		r.checkShell,
	} {
		if err := step(); err != nil {
			return nil, err
		}
	}
	r.releaseUnused(glue, release)
	inj := r.inj
	for _, s := range [][]string{inj.Files, inj.Dirs, inj.Symlinks, inj.Kept} {
		sort.Strings(s)
	}
	return inj, nil
}

// refuseTaken refuses an image that has Gondolin's agents of its own, or
// a file at the entrypoint's path.
func (r *imgResolver) refuseTaken() error {
	for _, p := range AgentPaths {
		l, err := r.walk(p, false, false)
		if err != nil {
			return injErr("cannot place "+p, err)
		}
		if l.node != nil {
			return &hint.Error{Msg: fmt.Sprintf("the image has its own %s (at %s); Gondolin's guest agent must be there", p, l.path),
				Fixes: []string{"Remove " + p + " from the image (a final build stage without it), or convert an image that does not ship Gondolin's binaries."}}
		}
	}
	if l, err := r.walk(EntrypointPath, false, false); err != nil || l.node != nil {
		return &hint.Error{Msg: "the image already has " + EntrypointPath + ", the path docker2vm uses for its entrypoint script", Err: err,
			Fixes: []string{"Remove " + EntrypointPath + " from the image."}}
	}
	return nil
}

// moveImageInit moves the image's own /init (if any) to ImageInitPath:
// Gondolin's initramfs always runs /init.
func (r *imgResolver) moveImageInit() error {
	l, err := r.walk(InitPath, false, false)
	if err != nil {
		return injErr("cannot place /init", err)
	}
	if l.node == nil {
		return nil
	}
	if err := r.mkdirAll(PrivateDir, 0o755); err != nil {
		return err
	}
	dst, err := r.walk(ImageInitPath, false, true)
	if err != nil {
		return injErr("cannot move the image's /init", err)
	}
	if dst.node != nil {
		return &hint.Error{Msg: "the image has its own /init and " + ImageInitPath + " is taken, so /init cannot make way for Gondolin's",
			Fixes: []string{"Remove " + ImageInitPath + " (or /init) from the image."}}
	}
	if dst.path == InitPath || strings.HasPrefix(dst.path, InitPath+"/") {
		// The image's symlinks lead PrivateDir into its own /init
		// directory: moving /init there would nest it in itself.
		return &hint.Error{Msg: "the image's /init must make way for Gondolin's, but " + ImageInitPath + " resolves to " + dst.path + ", inside /init itself (through the image's symlinks)",
			Fixes: []string{"Remove the symlink that leads " + PrivateDir + " into /init, or remove /init from the image."}}
	}
	n := l.node
	if err := fstree.Move(l.parent, l.name, dst.parent, dst.name, nil); err != nil {
		return injErr("cannot move the image's /init", err)
	}
	if n.Type == fstree.TypeSymlink && !strings.HasPrefix(n.Target, "/") {
		n.Target = path.Clean("/" + n.Target) // it was relative to /
	}
	r.inj.Moved = append(r.inj.Moved, Move{From: InitPath, To: dst.path})
	r.inj.Notes = append(r.inj.Notes, "the image's own /init was moved to "+dst.path+" (Gondolin's initramfs always starts /init); "+EntrypointPath+" runs it where the image's ENTRYPOINT/CMD names /init")
	return nil
}

// addRequiredDirs makes the directories Gondolin's init needs.
func (r *imgResolver) addRequiredDirs() error {
	for _, d := range requiredDirs {
		if err := r.mkdirAll(d.path, d.mode); err != nil {
			return err
		}
	}
	return nil
}

// addModules merges the base's kernel modules.
func (r *imgResolver) addModules(glue *Glue) error {
	for _, kver := range slices.Sorted(maps.Keys(glue.Modules)) {
		if err := r.merge(ModulesDir+"/"+kver, nil, glue.Modules[kver]); err != nil {
			return err
		}
	}
	return nil
}

// addTools links the base's busybox applets for the tools Gondolin's init
// needs that the image lacks.
func (r *imgResolver) addTools(glue *Glue) error {
	var missing []string
	for _, tool := range InitTools {
		if r.hasTool(tool) {
			continue
		}
		t, ok := glue.Tools[tool]
		if !ok {
			if softTools[tool] {
				r.inj.Notes = append(r.inj.Notes, "neither the image nor the base has "+tool+"; Gondolin's init goes on without it")
				continue
			}
			missing = append(missing, tool)
			continue
		}
		if err := r.addBinary(glue, t.Binary); err != nil {
			return err
		}
		dirs := []string{"/bin"}
		if tool != "sh" {
			dirs = uniq(append([]string{t.Dir}, "/usr/bin", "/bin", "/usr/sbin", "/sbin"))
		}
		placed := false
		for _, d := range dirs {
			l, err := r.walk(d+"/"+tool, false, false)
			if err != nil || l.node != nil {
				continue
			}
			if _, err := r.addSymlink(d+"/"+tool, PrivateBinDir+"/"+t.Binary); err != nil {
				return err
			}
			placed = true
			break
		}
		if !placed {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		return &hint.Error{Msg: "Gondolin's init needs " + strings.Join(missing, ", ") + ", which neither the image nor the base provides (or the image's paths for them are taken by broken entries)",
			Fixes: []string{"Use a base bundle whose rootfs has busybox (Gondolin's alpine-base does).", "Or add those commands to the image (e.g. busybox)."}}
	}
	return nil
}

// addUserSwitcher adds the program that runs the entrypoint as the
// image's USER, when that is not root.
func (r *imgResolver) addUserSwitcher(glue *Glue, user string) error {
	if isRootUser(user) {
		return nil
	}
	bin, err := setuser.Binary(glue.Arch)
	if err != nil {
		return &hint.Error{Msg: "cannot add " + SetuserPath + ", which runs the entrypoint as the image's USER " + user, Err: err,
			Fixes: []string{"Use a base bundle for x86_64 or aarch64."}}
	}
	if err := r.mkdirAll(PrivateBinDir, 0o755); err != nil {
		return err
	}
	if added, err := r.addGenerated(glue, SetuserPath, bin, 0o755); err != nil {
		return err
	} else if !added {
		return &hint.Error{Msg: "the image already has " + SetuserPath + ", the path docker2vm uses for its user switcher",
			Fixes: []string{"Remove " + SetuserPath + " from the image."}}
	}
	return nil
}

// addEnv writes the image's environment (EnvScript), unless the image has
// a file there.
func (r *imgResolver) addEnv(glue *Glue, env []string) error {
	envScript, envNotes := EnvScript(env)
	r.inj.Notes = append(r.inj.Notes, envNotes...)
	if err := r.mkdirAll(path.Dir(ImageEnvPath), 0o755); err != nil {
		return err
	}
	if added, err := r.addGenerated(glue, ImageEnvPath, []byte(envScript), 0o644); err != nil {
		return err
	} else if !added {
		r.inj.Kept = append(r.inj.Kept, ImageEnvPath)
		r.inj.Notes = append(r.inj.Notes, "the image has its own "+ImageEnvPath+"; it was kept and the image's ENV was not written there")
	}
	return nil
}

// addEntrypoint makes the working directory and writes the entrypoint
// runner (EntrypointScript).
func (r *imgResolver) addEntrypoint(glue *Glue, cfg ImageConfig) error {
	if wd := cfg.WorkingDir; wd != "" {
		if err := r.mkdirAll(path.Clean("/"+wd), 0o755); err != nil {
			return err
		}
	}
	moved := ""
	if len(r.inj.Moved) > 0 {
		moved = r.inj.Moved[0].To
	}
	if added, err := r.addGenerated(glue, EntrypointPath, []byte(EntrypointScript(cfg, moved)), 0o755); err != nil {
		return err
	} else if !added {
		return &hint.Error{Msg: "the image already has " + EntrypointPath}
	}
	return nil
}

// checkShell refuses an image whose /bin/sh is broken: the init's
// interpreter must work.
func (r *imgResolver) checkShell() error {
	if !r.hasFileAt("/bin/sh") {
		return &hint.Error{Msg: "the image's /bin/sh is broken (a dangling symlink or not a file), so Gondolin's init cannot run",
			Fixes: []string{"Fix or remove /bin/sh in the image; docker2vm adds busybox's sh when /bin/sh is absent."}}
	}
	return nil
}

// check rejects config values no program could receive: a NUL byte ends
// a C string, so `docker run` fails on them too, and a shell script that
// holds one is dropped or refused depending on the shell.
func (c ImageConfig) check() error {
	bad := func(field, v string) error {
		return &hint.Error{Msg: fmt.Sprintf("the image config's %s %q contains a NUL byte", field, v),
			Fixes: []string{"Fix " + field + " in the image (docker run cannot use it either)."}}
	}
	for i, a := range c.Entrypoint {
		if strings.ContainsRune(a, 0) {
			return bad(fmt.Sprintf("Entrypoint[%d]", i), a)
		}
	}
	for i, a := range c.Cmd {
		if strings.ContainsRune(a, 0) {
			return bad(fmt.Sprintf("Cmd[%d]", i), a)
		}
	}
	if strings.ContainsRune(c.WorkingDir, 0) {
		return bad("WorkingDir", c.WorkingDir)
	}
	if strings.ContainsRune(c.User, 0) {
		return bad("User", c.User)
	}
	return nil
}

func injErr(msg string, err error) error {
	return &hint.Error{Msg: msg, Err: err, Fixes: []string{"Check the image for files where directories are expected (e.g. /usr/bin, /etc/profile.d)."}}
}

func uniq(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// isRootUser reports whether a Docker USER value means root.
func isRootUser(u string) bool {
	u = strings.TrimSpace(u)
	return u == "" || u == "root" || u == "0" || u == "0:0" || u == "root:root" || u == "root:0" || u == "0:root"
}

// imgResolver walks and changes the image tree like a chroot: absolute
// symlink targets restart at the tree root and ".." stops there (package
// confine has the rules).
type imgResolver struct {
	t      *fstree.Tree
	inj    *Injection
	placed map[*fstree.Inode]bool
	now    fstree.Timestamp
}

type loc struct {
	parent *fstree.Inode // the directory holding name
	name   string
	node   *fstree.Inode // nil if absent
	path   string        // real absolute path
}

// imgFS is the image tree as confine.Resolve walks it for Inject: the
// directories it makes on the way are root-owned 0755, dated like the
// image root, and listed in the Injection.
type imgFS struct {
	fstree.Entries
	r *imgResolver
}

func (f imgFS) Mkdir(dir *fstree.Inode, name, path string) (*fstree.Inode, error) {
	d := f.r.newDir(0o755)
	fstree.Link(dir, name, d, nil)
	f.r.inj.Dirs = append(f.r.inj.Dirs, path)
	return d, nil
}

// walk resolves p. Symlinks in the middle are always followed, the last
// one only with followLast. With create, missing intermediate directories
// are created (0755, root). Without it, a missing intermediate directory
// means the path is free: node is nil and parent is nil. Symlink targets
// are walked as the guest's kernel walks them (not cleaned lexically
// first): Inject asks what the booted guest finds at a path.
func (r *imgResolver) walk(p string, followLast, create bool) (loc, error) {
	res, err := confine.Resolve(imgFS{r: r}, r.t.Root, p, confine.Options{FollowLast: followLast, Create: create, Path: true})
	if err != nil {
		var ce *confine.Error
		if errors.Is(err, confine.ErrNotExist) && errors.As(err, &ce) {
			return loc{path: ce.Path}, nil
		}
		return loc{}, fmt.Errorf("%s: %w", p, err)
	}
	return loc{parent: res.Parent, name: res.Name, node: res.Node, path: res.Path}, nil
}

func (r *imgResolver) newDir(mode uint32) *fstree.Inode {
	d := fstree.NewDir(mode, 0, 0)
	d.Mtime, d.Atime, d.Ctime = r.now, r.now, r.now
	return d
}

// mkdirAll makes p a directory (through the image's symlinks) if missing.
func (r *imgResolver) mkdirAll(p string, mode uint32) error {
	l, err := r.walk(p, true, true)
	if err != nil {
		return injErr("cannot create "+p, err)
	}
	if l.node == nil {
		fstree.Link(l.parent, l.name, r.newDir(mode), nil)
		r.inj.Dirs = append(r.inj.Dirs, l.path)
		return nil
	}
	if l.node.Type != fstree.TypeDir {
		return &hint.Error{Msg: fmt.Sprintf("the image has a %s at %s where Gondolin's init needs a directory", l.node.Type, l.path),
			Fixes: []string{"Remove " + l.path + " from the image or make it a directory."}}
	}
	return nil
}

// add links n at p when p is free; false if the image has an entry there.
func (r *imgResolver) add(p string, n *fstree.Inode) (bool, string, error) {
	l, err := r.walk(p, false, false)
	if err != nil {
		return false, "", injErr("cannot place "+p, err)
	}
	if l.node != nil {
		return false, l.path, nil
	}
	if l, err = r.walk(p, false, true); err != nil {
		return false, "", injErr("cannot place "+p, err)
	}
	fstree.Link(l.parent, l.name, n, nil)
	r.markPlaced(n)
	return true, l.path, nil
}

func (r *imgResolver) markPlaced(n *fstree.Inode) {
	r.placed[n] = true
	for _, c := range n.Children() {
		r.markPlaced(c)
	}
}

func (r *imgResolver) addFile(p string, n *fstree.Inode) (bool, error) {
	ok, real, err := r.add(p, n)
	if err != nil {
		return false, err
	}
	if !ok {
		return false, &hint.Error{Msg: "cannot add " + p + ": the image has an entry at " + real}
	}
	r.inj.Files = append(r.inj.Files, real)
	return true, nil
}

func (r *imgResolver) addSymlink(p, target string) (bool, error) {
	n := &fstree.Inode{Type: fstree.TypeSymlink, Mode: 0o777, Target: target, Mtime: r.now, Atime: r.now, Ctime: r.now}
	ok, real, err := r.add(p, n)
	if err != nil || !ok {
		return ok, err
	}
	r.inj.Symlinks = append(r.inj.Symlinks, real)
	return true, nil
}

// addGenerated stores data through the glue's store and adds it at p if free.
func (r *imgResolver) addGenerated(glue *Glue, p string, data []byte, mode uint32) (bool, error) {
	if l, err := r.walk(p, false, false); err != nil {
		return false, injErr("cannot place "+p, err)
	} else if l.node != nil {
		return false, nil
	}
	if glue.store == nil {
		return false, errors.New("gondolin.Inject: glue has no store (use ReadGlue)")
	}
	n, err := putFile(context.Background(), glue.store, &fstree.Inode{Mode: mode, Mtime: r.now, Atime: r.now, Ctime: r.now}, data)
	if err != nil {
		return false, err
	}
	return r.addFile(p, n)
}

// addBinary places a base binary under PrivateBinDir with the libraries
// it needs (each only where the image has nothing: an image's own musl
// loader or library of the same name is kept).
func (r *imgResolver) addBinary(glue *Glue, bin string) error {
	n := glue.Binaries[bin]
	if n == nil {
		return fmt.Errorf("gondolin.Inject: glue has no binary %q", bin)
	}
	if r.placed[n] {
		return nil
	}
	if err := r.mkdirAll(PrivateBinDir, 0o755); err != nil {
		return err
	}
	if _, err := r.addFile(PrivateBinDir+"/"+bin, n); err != nil {
		return err
	}
	for _, lp := range glue.Needs[bin] {
		ln := glue.Libs[lp]
		if ln == nil || r.placed[ln] {
			continue
		}
		ok, real, err := r.add(lp, ln)
		if err != nil {
			return err
		}
		if !ok {
			if !contains(r.inj.Kept, real) {
				r.inj.Kept = append(r.inj.Kept, real)
				r.inj.Notes = append(r.inj.Notes, fmt.Sprintf("the image has its own %s; %s uses it instead of the base's", real, bin))
			}
			continue
		}
		if ln.Type == fstree.TypeSymlink {
			r.inj.Symlinks = append(r.inj.Symlinks, real)
		} else {
			r.inj.Files = append(r.inj.Files, real)
		}
	}
	return nil
}

func contains(s []string, x string) bool {
	for _, y := range s {
		if y == x {
			return true
		}
	}
	return false
}

// merge adds a base directory subtree src at p: grafted whole when p is
// free, entry by entry (image entries win) when the image has that
// directory. from is the glue directory holding src as path.Base(p), nil
// when src is detached (a Glue.Modules entry).
func (r *imgResolver) merge(p string, from, src *fstree.Inode) error {
	l, err := r.walk(p, true, true)
	if err != nil {
		return injErr("cannot place "+p, err)
	}
	if l.node == nil {
		if from != nil {
			fstree.Detach(from, path.Base(p))
		}
		fstree.Link(l.parent, l.name, src, nil)
		r.markPlaced(src)
		if src.Type == fstree.TypeDir {
			r.inj.Dirs = append(r.inj.Dirs, l.path)
		} else if src.Type == fstree.TypeSymlink {
			r.inj.Symlinks = append(r.inj.Symlinks, l.path)
		} else {
			r.inj.Files = append(r.inj.Files, l.path)
		}
		return nil
	}
	if l.node.Type != fstree.TypeDir || src.Type != fstree.TypeDir {
		r.inj.Kept = append(r.inj.Kept, l.path)
		return nil
	}
	for _, name := range fstree.SortedNames(src) {
		c := src.Child(name)
		if c.Type == fstree.TypeDir {
			if err := r.merge(l.path+"/"+name, src, c); err != nil {
				return err
			}
			continue
		}
		if ex := l.node.Child(name); ex != nil {
			r.inj.Kept = append(r.inj.Kept, l.path+"/"+name)
			continue
		}
		if err := fstree.Move(src, name, l.node, name, nil); err != nil {
			return injErr("cannot place "+l.path+"/"+name, err)
		}
		r.placed[c] = true
		if c.Type == fstree.TypeSymlink {
			r.inj.Symlinks = append(r.inj.Symlinks, l.path+"/"+name)
		} else {
			r.inj.Files = append(r.inj.Files, l.path+"/"+name)
		}
	}
	return nil
}

// hasFileAt reports whether p resolves to a regular file.
func (r *imgResolver) hasFileAt(p string) bool {
	l, err := r.walk(p, true, false)
	return err == nil && l.node != nil && l.node.Type == fstree.TypeRegular
}

// hasTool reports whether the init's PATH finds tool in the image.
func (r *imgResolver) hasTool(tool string) bool {
	if tool == "sh" {
		return r.hasFileAt("/bin/sh")
	}
	for _, d := range initPATH {
		if r.hasFileAt(d + "/" + tool) {
			return true
		}
	}
	return false
}

// releaseUnused hands back content of glue inodes Inject did not place.
func (r *imgResolver) releaseUnused(g *Glue, release func(fstree.Content)) {
	if release == nil {
		return
	}
	done := map[*fstree.Inode]bool{}
	var visit func(n *fstree.Inode)
	visit = func(n *fstree.Inode) {
		if n == nil || done[n] {
			return
		}
		done[n] = true
		if !r.placed[n] && n.Content != nil {
			release(n.Content)
		}
		for _, c := range n.Children() {
			visit(c)
		}
	}
	visit(g.Init)
	for _, k := range slices.Sorted(maps.Keys(g.Agents)) {
		visit(g.Agents[k])
	}
	for _, k := range slices.Sorted(maps.Keys(g.Modules)) {
		visit(g.Modules[k])
	}
	for _, k := range slices.Sorted(maps.Keys(g.Binaries)) {
		visit(g.Binaries[k])
	}
	for _, k := range slices.Sorted(maps.Keys(g.Libs)) {
		visit(g.Libs[k])
	}
}
