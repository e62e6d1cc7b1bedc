package guest

// Rendering of the scripts docker2vm writes into a guest: the image's
// environment (ImageEnvPath) and the entrypoint runner (EntrypointPath).

import (
	"bytes"
	_ "embed"
	"fmt"
	"path"
	"regexp"
	"strings"

	"github.com/docker2vm/docker2vm/gondolin/guestenv"
	"github.com/docker2vm/docker2vm/internal/shell"
)

// shellName is a name a shell can export.
var shellName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// shellReadonly are names a common /bin/sh keeps read-only (bash, also
// as sh: Fedora, RHEL/UBI, Arch, Amazon Linux). Assigning one is a fatal
// error there, even with `|| :`, which under Gondolin's `set -eu` /init
// stops the boot; so they are exported only where the shell allows it.
var shellReadonly = map[string]bool{"UID": true, "EUID": true, "PPID": true,
	"SHELLOPTS": true, "BASHOPTS": true, "BASH_VERSINFO": true}

// EnvScript renders an image's Env as `export K='v'` lines. Entries that
// a shell cannot export (no '=', a key that is not a shell name, a NUL
// byte) are left out and reported in notes. Names some shells keep
// read-only (UID, EUID, PPID, ...) are exported behind a subshell probe,
// so that sourcing the file never fails. Later duplicates win, as in Docker.
func EnvScript(env []string) (string, []string) {
	var b bytes.Buffer
	b.WriteString("# The image's environment (ENV), written by docker2vm.\n")
	b.WriteString("# Sourced by Gondolin's /init before it starts sandboxd, and by " + EntrypointPath + ".\n")
	var notes []string
	guarded := map[string]bool{}
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !shellName.MatchString(k) || strings.ContainsRune(v, 0) {
			notes = append(notes, fmt.Sprintf("image env entry %q cannot be exported by a shell; left out of %s", kv, ImageEnvPath))
			continue
		}
		if shellReadonly[k] {
			fmt.Fprintf(&b, "if (export %[1]s=%[2]s) 2>/dev/null; then export %[1]s=%[2]s; fi\n", k, shell.Quote(v))
			if !guarded[k] {
				guarded[k] = true
				notes = append(notes, fmt.Sprintf("image env %s is read-only in bash: it is not set where the image's /bin/sh is bash", k))
			}
			continue
		}
		fmt.Fprintf(&b, "export %s=%s\n", k, shell.Quote(v))
	}
	return b.String(), notes
}

// entrypointRunner is the static part of the entrypoint script: shell
// functions that EntrypointScript's rendered settings call.
//
//go:embed entrypoint.sh
var entrypointRunner string

// runnerPaths are the guest files the entrypoint script reads and runs.
// Tests point them into a temporary directory.
type runnerPaths struct {
	agentEnv, passwd, group, setuser string
}

var guestPaths = runnerPaths{agentEnv: guestenv.AgentEnvPath, passwd: "/etc/passwd", group: "/etc/group", setuser: SetuserPath}

// KeptAgentVars are variables Gondolin's init exports that the entrypoint
// runner passes on although the caller did not set them: the CA bundle
// Gondolin's HTTP mediation needs (its init points them at the bundle that
// holds its MITM CA).
var KeptAgentVars = []string{"SSL_CERT_FILE", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "UV_SYSTEM_CERTS"}

// EntrypointScript renders /usr/bin/docker2vm-entrypoint: it execs
// ENTRYPOINT + (its arguments, or CMD when it has none) in WorkingDir, as
// `docker run IMAGE [ARGS...]` does, as User: resolved with the image's
// /etc/passwd and /etc/group when it runs, and switched to with
// SetuserPath (a root User needs no switch). Its environment is Docker's:
// the image's ENV, the caller's variables over it, then PATH, HOSTNAME and
// HOME where neither set them. movedInit, when set, replaces a "/init"
// argument. The script is entrypoint.sh with the image's settings
// appended.
func EntrypointScript(cfg ImageConfig, movedInit string) string {
	return entrypointScript(cfg, movedInit, guestPaths)
}

func entrypointScript(cfg ImageConfig, movedInit string, paths runnerPaths) string {
	q := func(args []string) string {
		out := make([]string, len(args))
		for i, a := range args {
			if movedInit != "" && a == InitPath {
				a = movedInit
			}
			out[i] = shell.Quote(a)
		}
		return strings.Join(out, " ")
	}
	wd := cfg.WorkingDir
	if wd == "" {
		wd = "/"
	}
	setuserPath, user, group := "", "", ""
	if !isRootUser(cfg.User) {
		setuserPath = paths.setuser
		user, group = userSpec(cfg.User)
	}
	var b strings.Builder
	// literal marks a line whose quoted values hold $ or ` for shellcheck,
	// which otherwise suspects an expansion meant to happen.
	literal := func(quoted string) {
		if strings.ContainsAny(quoted, "$`") {
			b.WriteString("# shellcheck disable=SC2016 # a literal value\n")
		}
	}
	assign := func(name, value string) {
		literal(shell.Quote(value))
		fmt.Fprintf(&b, "%s=%s\n", name, shell.Quote(value))
	}
	b.WriteString(entrypointRunner)
	b.WriteString("\n# The image's settings, written by docker2vm.\n")
	assign("d2v_agent_env_file", paths.agentEnv)
	assign("d2v_keep", strings.Join(KeptAgentVars, " "))
	assign("d2v_passwd_file", paths.passwd)
	assign("d2v_group_file", paths.group)
	assign("d2v_workdir", path.Clean("/"+wd))
	b.WriteString("# USER, split at its first colon; without d2v_setuser (root) the command\n# runs as this script's user.\n")
	assign("d2v_setuser", setuserPath)
	assign("d2v_user", user)
	assign("d2v_group", group)
	b.WriteString("# The image's ENV, each where the caller did not set it.\nd2v_image_env() {\n")
	for _, kv := range imageEnv(cfg.Env) {
		v := shell.Quote(kv[1])
		if strings.ContainsAny(v, "$`") {
			b.WriteString("\t# shellcheck disable=SC2016 # a literal value\n")
		}
		if shellReadonly[kv[0]] {
			// Read-only in bash: assigning it would end the script there.
			fmt.Fprintf(&b, "\tif (d2v_default %[1]s %[2]s) 2>/dev/null; then d2v_default %[1]s %[2]s; fi\n", kv[0], v)
			continue
		}
		fmt.Fprintf(&b, "\td2v_default %s %s\n", kv[0], v)
	}
	b.WriteString("\t:\n}\n")
	b.WriteString("# ENTRYPOINT, then the arguments or else CMD.\n")
	if len(cfg.Cmd) > 0 {
		cmd := q(cfg.Cmd)
		literal(cmd)
		fmt.Fprintf(&b, "if [ \"$#\" -eq 0 ]; then\n\tset -- %s\nfi\n", cmd)
	}
	if len(cfg.Entrypoint) > 0 {
		ep := q(cfg.Entrypoint)
		literal(ep)
		fmt.Fprintf(&b, "set -- %s \"$@\"\n", ep)
	}
	b.WriteString("d2v_main \"$@\"\n")
	return b.String()
}

// imageEnv returns the image's ENV entries a shell can export, as name and
// value, each name once with its last value (as Docker resolves
// duplicates), in the order names first appear.
func imageEnv(env []string) [][2]string {
	last := map[string]string{}
	var names []string
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !shellName.MatchString(k) || strings.ContainsRune(v, 0) {
			continue
		}
		if _, seen := last[k]; !seen {
			names = append(names, k)
		}
		last[k] = v
	}
	out := make([][2]string, len(names))
	for i, k := range names {
		out[i] = [2]string{k, last[k]}
	}
	return out
}

// userSpec splits a Docker USER value as runc does: the user (a name or a
// uid) before the first colon, the group (a name or a gid) after it, and
// anything after a second colon ignored.
func userSpec(u string) (user, group string) {
	parts := strings.SplitN(strings.TrimSpace(u), ":", 3)
	user = parts[0]
	if len(parts) > 1 {
		group = parts[1]
	}
	return user, group
}
