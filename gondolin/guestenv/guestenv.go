// Package guestenv is docker2vm-guestenv, the program that gives a
// converted guest's processes the environment a container runtime gives a
// container, within Gondolin's contract. docker2vm installs it as
// /usr/bin/sandboxd, where Gondolin's rootfs /init ends (`exec
// /usr/bin/sandboxd`), and moves the base's agent to AgentPath: the program
// prepares the guest, then execs the agent with the same arguments and
// environment. It runs after everything Gondolin's init does (its tmpfs
// mounts, sandboxfs, the MITM CA), and before any of the image's processes.
//
// What it does, each step on its own (a step that fails is reported on
// stderr, the console, and the agent starts all the same: a guest without
// one of them is better than no guest):
//   - the loopback interface up (Gondolin's init does it only when the
//     image has ip or ifconfig);
//   - the hostname from /etc/hostname (docker2vm writes one when the image
//     has none);
//   - /dev/fd, /dev/stdin, /dev/stdout, /dev/stderr, /dev/core and (when
//     missing) /dev/ptmx as symlinks, /dev/shm as a tmpfs and /dev/mqueue, as
//     runc creates them;
//   - the image's own files under every directory Gondolin's init covered
//     with a tmpfs (/tmp, /root, /var/tmp, /var/cache, /var/log, /run):
//     visible and writable again through an overlay whose lower layer is
//     the image's directory and whose upper layer is that tmpfs, so that
//     writes still go to memory as Gondolin intends, nothing is copied,
//     and what Gondolin put there already stays;
//   - RLIMIT_NOFILE as Docker sets it;
//   - a copy of the agent's environment at AgentEnvPath, which the
//     entrypoint runner reads to tell a caller's variables from those
//     every command inherits.
//
// The program is built statically for each guest architecture (package
// prebuilt holds the binaries docker2vm embeds).
package guestenv

import (
	"io"
	"sort"
	"strings"

	"github.com/docker2vm/docker2vm/internal/mountinfo"
	"github.com/docker2vm/docker2vm/internal/shell"
)

// Paths in the guest.
const (
	// Name is the program's name in messages.
	Name = "docker2vm-guestenv"
	// InstallPath is where docker2vm installs the program: the path
	// Gondolin's init execs.
	InstallPath = "/usr/bin/sandboxd"
	// AgentPath is where docker2vm moves the base's sandboxd.
	AgentPath = "/usr/lib/docker2vm/sandboxd"
	// AgentEnvPath is the agent's environment, as shell assignments (see
	// AgentEnvScript).
	AgentEnvPath = "/run/docker2vm/agent-env.sh"
	// OverlayDir is the directory each covered tmpfs holds its overlay's
	// upper and work directories in (hidden under the overlay).
	OverlayDir = ".docker2vm-overlay"
)

// NoFile is RLIMIT_NOFILE (soft and hard) as Docker sets it for a
// container: the daemon's own limit, 1048576 under its systemd unit.
const NoFile = 1048576

// Shm is the size of the tmpfs on /dev/shm, Docker's default (--shm-size).
const Shm = 64 << 20

// Links are the /dev symlinks runc creates in every container, by name
// under /dev.
var Links = []struct{ Name, Target string }{
	{"fd", "/proc/self/fd"},
	{"stdin", "/proc/self/fd/0"},
	{"stdout", "/proc/self/fd/1"},
	{"stderr", "/proc/self/fd/2"},
	{"core", "/proc/kcore"},
}

// Mount is a line of mountinfo (package mountinfo).
type Mount = mountinfo.Mount

// ParseMountinfo reads /proc/self/mountinfo (mountinfo.Parse).
func ParseMountinfo(r io.Reader) ([]Mount, error) { return mountinfo.Parse(r) }

// Covered returns the mount points of the tmpfs mounts that cover a
// directory of the root filesystem itself (the mounts whose parent is the
// last mount on root, "/" in a guest), except under /dev, /proc and /sys
// of it: the directories Gondolin's init hid the image's files under.
// Sorted.
func Covered(mounts []Mount, root string) []string {
	rootID := -1
	for _, m := range mounts {
		if m.Point == root {
			rootID = m.ID // the last mount on root is the one in use
		}
	}
	var out []string
	for _, m := range mounts {
		if m.Parent != rootID || m.FSType != "tmpfs" || m.Point == root {
			continue
		}
		rel := strings.TrimPrefix(m.Point, strings.TrimSuffix(root, "/"))
		if !strings.HasPrefix(rel, "/") || under(rel, "/dev") || under(rel, "/proc") || under(rel, "/sys") {
			continue
		}
		out = append(out, m.Point)
	}
	sort.Strings(out)
	return out
}

func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

// IsMountPoint reports whether p is the mount point of one of mounts.
func IsMountPoint(mounts []Mount, p string) bool {
	for _, m := range mounts {
		if m.Point == p {
			return true
		}
	}
	return false
}

// OverlayOptions renders the overlay mount options for lower, upper and
// work directories, escaping what the kernel's option parser splits on
// (commas separate options, colons lower layers, a backslash escapes).
func OverlayOptions(lower, upper, work string) string {
	esc := strings.NewReplacer(`\`, `\\`, `,`, `\,`, `:`, `\:`)
	return "lowerdir=" + esc.Replace(lower) + ",upperdir=" + esc.Replace(upper) + ",workdir=" + esc.Replace(work)
}

// isShellName reports whether s can name a shell variable.
func isShellName(s string) bool {
	for i, c := range s {
		if c != '_' && !('A' <= c && c <= 'Z') && !('a' <= c && c <= 'z') && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return s != ""
}

// AgentEnvScript renders env (the agent's environment, "K=V" entries) as
// the file at AgentEnvPath: POSIX shell assignments the entrypoint runner
// sources,
//
//	d2v_agent_vars='HOME PATH'
//	d2v_agent_HOME='/root'
//	d2v_agent_PATH='/usr/sbin:/usr/bin:/sbin:/bin'
//
// Entries whose name a shell cannot hold are left out (a shell cannot have
// inherited them as variables either). A later duplicate wins, as in a
// process's getenv.
func AgentEnvScript(env []string) string {
	vals := map[string]string{}
	var names []string
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !isShellName(k) || strings.ContainsRune(v, 0) {
			continue
		}
		if _, seen := vals[k]; !seen {
			names = append(names, k)
		}
		vals[k] = v
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("# The environment Gondolin's agent started with, written by " + Name + " at boot:\n")
	b.WriteString("# every command started through the agent inherits it.\n")
	b.WriteString("d2v_agent_vars=" + shell.Quote(strings.Join(names, " ")) + "\n")
	for _, k := range names {
		b.WriteString("d2v_agent_" + k + "=" + shell.Quote(vals[k]) + "\n")
	}
	return b.String()
}

// Hostname returns the host name an /etc/hostname holds: its first line,
// trimmed, when it is a valid name of at most 64 bytes (the kernel's
// limit); "" otherwise.
func Hostname(data []byte) string {
	line, _, _ := strings.Cut(string(data), "\n")
	line = strings.TrimSpace(line)
	if line == "" || len(line) > 64 || strings.ContainsAny(line, " \t\x00/") {
		return ""
	}
	return line
}

// sourceHash is the hash of the sources the program was built from, set
// at link time by package prebuilt's generator (see package source), which
// its test reads back from the binaries.
var sourceHash string
