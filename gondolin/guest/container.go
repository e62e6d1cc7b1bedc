package guest

import (
	"context"

	"github.com/docker2vm/docker2vm/fstree"
	"github.com/docker2vm/docker2vm/gondolin/guestenv"
	"github.com/docker2vm/docker2vm/gondolin/guestenv/prebuilt"
	"github.com/docker2vm/docker2vm/hint"
)

// What Inject adds so that the image's processes get the environment a
// container runtime gives a container (docs/gondolin-contract.md, "What
// docker2vm adds"): docker2vm-guestenv in front of Gondolin's agent, and
// the /etc files Docker bind-mounts into every container.

// AgentPath is where the base's sandboxd goes: docker2vm-guestenv takes
// its place at SandboxdPath and execs it.
const AgentPath = guestenv.AgentPath

// addAgents adds Gondolin's agents: sandboxfs, sandboxssh and
// sandboxingress where the base has them, the base's sandboxd at
// AgentPath, and docker2vm-guestenv at SandboxdPath, where Gondolin's init
// execs it.
func (r *imgResolver) addAgents(glue *Glue) error {
	bin, err := prebuilt.Binary(glue.Arch)
	if err != nil {
		return &hint.Error{Msg: "cannot add " + guestenv.Name + ", which prepares the guest as a container runtime would", Err: err,
			Fixes: []string{"Use a base bundle for x86_64 or aarch64."}}
	}
	if l, err := r.walk(AgentPath, false, false); err != nil {
		return injErr("cannot place "+AgentPath, err)
	} else if l.node != nil {
		return &hint.Error{Msg: "the image already has " + AgentPath + ", the path docker2vm moves Gondolin's agent to",
			Fixes: []string{"Remove " + AgentPath + " from the image."}}
	}
	for _, p := range AgentPaths {
		n := glue.Agents[p]
		if n == nil {
			continue
		}
		at := p
		if p == SandboxdPath {
			at = AgentPath
			if err := r.mkdirAll(PrivateDir, 0o755); err != nil {
				return err
			}
		}
		if _, err := r.addFile(at, n); err != nil {
			return err
		}
	}
	if _, err := r.addGenerated(glue, SandboxdPath, bin, 0o755); err != nil {
		return err
	}
	return nil
}

// hostsFile is Docker's /etc/hosts for a container named name, with the
// name on 127.0.1.1 (as Debian does for a host without a fixed address:
// the guest's own address comes from DHCP at boot).
func hostsFile(name string) string {
	return "127.0.0.1\tlocalhost\n" +
		"::1\tlocalhost ip6-localhost ip6-loopback\n" +
		"fe00::0\tip6-localnet\n" +
		"ff00::0\tip6-mcastprefix\n" +
		"ff02::1\tip6-allnodes\n" +
		"ff02::2\tip6-allrouters\n" +
		"127.0.1.1\t" + name + "\n"
}

// addHostFiles writes /etc/hostname and /etc/hosts where the image's are
// absent or empty (images built by Docker or BuildKit ship them so: the
// runtime bind-mounts its own over them). An image's non-empty file, or
// anything that is not a regular file, is kept. The host name is the
// image's own when its /etc/hostname names one.
func (r *imgResolver) addHostFiles(glue *Glue, name string) error {
	if name == "" {
		name = DefaultHostname
	}
	l, err := r.walk("/etc/hostname", true, false)
	if err != nil {
		return injErr("cannot place /etc/hostname", err)
	}
	if own := r.regularContent(glue, l.node); own != "" {
		if h := guestenv.Hostname([]byte(own)); h != "" {
			name = h
		}
	}
	for _, f := range []struct{ path, data string }{
		{"/etc/hostname", name + "\n"},
		{"/etc/hosts", hostsFile(name)},
	} {
		if err := r.fillEmpty(glue, f.path, []byte(f.data)); err != nil {
			return err
		}
	}
	return nil
}

// regularContent returns the start of n's content when n is a non-empty
// regular file, read back through the glue's store (the image's files are
// in the same store: the ext4 writer's); "" otherwise.
func (r *imgResolver) regularContent(glue *Glue, n *fstree.Inode) string {
	if n == nil || n.Type != fstree.TypeRegular || n.Content == nil || n.Size() == 0 {
		return ""
	}
	o, ok := glue.store.(fstree.Opener)
	if !ok {
		return ""
	}
	ra, err := o.Open(n.Content)
	if err != nil {
		return ""
	}
	buf := make([]byte, min(n.Size(), 256))
	k, _ := ra.ReadAt(buf, 0)
	return string(buf[:k])
}

// fillEmpty adds data at p when p is free, or replaces an empty regular
// file there (its name only: other hard links keep the empty file).
func (r *imgResolver) fillEmpty(glue *Glue, p string, data []byte) error {
	l, err := r.walk(p, true, false)
	if err != nil {
		return injErr("cannot place "+p, err)
	}
	switch {
	case l.node == nil:
		if err := r.mkdirAll("/etc", 0o755); err != nil {
			return err
		}
		added, err := r.addGenerated(glue, p, data, 0o644)
		if err != nil || added {
			return err
		}
	case l.node.Type == fstree.TypeRegular && l.node.Size() == 0:
		meta := l.node
		n, err := putFile(context.Background(), glue.store, meta, data)
		if err != nil {
			return err
		}
		fstree.Unlink(l.parent, l.name, nil)
		fstree.Link(l.parent, l.name, n, nil)
		r.markPlaced(n)
		r.inj.Files = append(r.inj.Files, l.path)
		r.inj.Notes = append(r.inj.Notes, "the image's empty "+l.path+" was filled in, as a container runtime mounts one over it")
		return nil
	}
	r.inj.Kept = append(r.inj.Kept, p)
	return nil
}
