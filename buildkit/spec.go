package buildkit

import (
	"encoding/csv"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/docker2vm/docker2vm/hint"
)

// The flags of `docker buildx build` that docker2vm passes on, parsed and
// checked before anything runs. Each is kept in the user's spelling; the
// argv builders translate it into each builder's own.

var buildArgKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// buildArg is one --build-arg after its value was looked up.
type buildArg struct {
	Key   string
	Value string
	// FromEnv: given as KEY alone, the value comes from the environment.
	FromEnv bool
}

// parseBuildArgs reads KEY=VALUE and KEY (value from the environment, as
// docker does; a KEY unset there is not passed, so the Dockerfile's default
// applies).
func parseBuildArgs(args []string, lookup func(string) (string, bool)) ([]buildArg, error) {
	var out []buildArg
	for _, a := range args {
		k, v, hasValue := strings.Cut(a, "=")
		if !buildArgKey.MatchString(k) {
			what := fmt.Sprintf("Invalid --build-arg %q", a)
			if k == "" {
				what += ": the name is empty"
			}
			return nil, &hint.Error{Msg: what + ".",
				Fixes: []string{"Write --build-arg KEY=VALUE, or --build-arg KEY to take the value from the environment; KEY is made of letters, digits and underscores."}}
		}
		if !hasValue {
			env, ok := lookup(k)
			if !ok {
				continue
			}
			out = append(out, buildArg{Key: k, Value: env, FromEnv: true})
			continue
		}
		out = append(out, buildArg{Key: k, Value: v})
	}
	return out, nil
}

// buildContext is one --build-context NAME=PATH|docker-image://REF.
type buildContext struct {
	Name  string
	Path  string // absolute; "" for an image
	Image string // the REF of docker-image://REF
}

const dockerImageScheme = "docker-image://"

// parseBuildContexts reads --build-context values and checks that local
// directories exist.
func parseBuildContexts(specs []string, b Builder) ([]buildContext, error) {
	var out []buildContext
	seen := map[string]bool{}
	for _, s := range specs {
		name, val, ok := strings.Cut(s, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" || val == "" {
			return nil, &hint.Error{Msg: fmt.Sprintf("Invalid --build-context %q.", s),
				Fixes: []string{"Write --build-context NAME=PATH (a local directory) or --build-context NAME=docker-image://REF."}}
		}
		if strings.ContainsAny(name, " \t,") {
			return nil, &hint.Error{Msg: fmt.Sprintf("Invalid --build-context name %q.", name),
				Fixes: []string{"A build context name is what the Dockerfile refers to (FROM NAME, COPY --from=NAME): no spaces or commas."}}
		}
		if seen[name] {
			return nil, &hint.Error{Msg: fmt.Sprintf("--build-context %s is given twice.", name), Fixes: []string{"Give each build context name once."}}
		}
		seen[name] = true
		if b == Buildctl && (name == "context" || name == "dockerfile") {
			return nil, &hint.Error{Msg: fmt.Sprintf("--build-context %s: buildctl uses the name %q for the build context or the Dockerfile itself.", name, name),
				Fixes: []string{"Pick another name for this build context."}}
		}
		if ref, ok := strings.CutPrefix(val, dockerImageScheme); ok {
			if strings.TrimSpace(ref) == "" {
				return nil, &hint.Error{Msg: fmt.Sprintf("--build-context %s: docker-image:// needs an image reference.", s),
					Fixes: []string{"Write --build-context NAME=docker-image://REGISTRY/REPO:TAG."}}
			}
			out = append(out, buildContext{Name: name, Image: ref})
			continue
		}
		if scheme, _, ok := strings.Cut(val, "://"); ok && !strings.ContainsAny(scheme, "/.") {
			return nil, &hint.Error{Msg: fmt.Sprintf("--build-context %s: %s:// sources are not supported.", s, scheme),
				Fixes: []string{"Give a local directory (NAME=PATH) or an image (NAME=docker-image://REF)."}}
		}
		abs, err := filepath.Abs(val)
		if err != nil {
			return nil, fmt.Errorf("--build-context %s: %w", s, err)
		}
		st, err := os.Stat(abs)
		if err != nil || !st.IsDir() {
			why := "is not a directory"
			if err != nil {
				why = "does not exist"
			}
			return nil, &hint.Error{Msg: fmt.Sprintf("--build-context %s: %s %s.", s, abs, why),
				Fixes: []string{"Give an existing directory: --build-context NAME=PATH, or an image: --build-context NAME=docker-image://REF."}}
		}
		out = append(out, buildContext{Name: name, Path: abs})
	}
	return out, nil
}

// checkSecret parses a --secret value as BuildKit does (CSV: id=, src= or
// source=, env=, type=file|env) and checks that a file source exists, so
// that a typo is reported with the flag that holds it, before the build.
func checkSecret(s string, lookup func(string) (string, bool)) error {
	bad := func(why string, fixes ...string) error {
		if len(fixes) == 0 {
			fixes = []string{"Write --secret id=NAME,src=PATH (a file) or --secret id=NAME,env=VARIABLE."}
		}
		return &hint.Error{Msg: fmt.Sprintf("--secret %s: %s", s, why), Fixes: fixes}
	}
	if strings.TrimSpace(s) == "" {
		return &hint.Error{Msg: "Empty --secret.", Fixes: []string{"Write --secret id=NAME,src=PATH (a file) or --secret id=NAME,env=VARIABLE."}}
	}
	r := csv.NewReader(strings.NewReader(s))
	fields, err := r.Read()
	if err != nil {
		return bad("not a comma-separated list of KEY=VALUE: " + err.Error() + ".")
	}
	var id, src, env, typ string
	for _, f := range fields {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return bad(fmt.Sprintf("%q is not KEY=VALUE.", f))
		}
		switch strings.ToLower(k) {
		case "id":
			id = v
		case "src", "source":
			src = v
		case "env":
			env = v
		case "type":
			if v != "file" && v != "env" {
				return bad(fmt.Sprintf("unknown type %q.", v), "Write type=file or type=env.")
			}
			typ = v
		default:
			return bad(fmt.Sprintf("unknown key %q.", k))
		}
	}
	if id == "" {
		return bad("no id.", "Name the secret the Dockerfile mounts (RUN --mount=type=secret,id=NAME): --secret id=NAME,src=PATH.")
	}
	if typ == "env" {
		return nil // env=, or src= naming the variable
	}
	if env != "" && src == "" {
		return nil
	}
	path := src
	if path == "" {
		// Neither: BuildKit takes the variable named id if it is set, else
		// the file named id.
		if _, ok := lookup(id); ok {
			return nil
		}
		path = id
	}
	st, err := os.Stat(path)
	if err != nil {
		return bad(fmt.Sprintf("the file %s does not exist.", path),
			"Give the path of an existing file with src=, or the name of an environment variable with env=.")
	}
	if st.IsDir() {
		return bad(fmt.Sprintf("%s is a directory, not a file.", path), "A secret is one file: give its path with src=.")
	}
	return nil
}

// checkSSH checks an --ssh value (default|ID[=SOCKET|KEY[,KEY...]]): the
// agent socket or key files it names must exist, and without paths
// SSH_AUTH_SOCK must name an agent.
func checkSSH(s string, lookup func(string) (string, bool)) error {
	id, val, hasPaths := strings.Cut(s, "=")
	if strings.TrimSpace(id) == "" {
		return &hint.Error{Msg: fmt.Sprintf("Invalid --ssh %q.", s),
			Fixes: []string{"Write --ssh default (the agent at SSH_AUTH_SOCK), --ssh default=PATH (an agent socket or a private key) or --ssh ID=PATH[,PATH]."}}
	}
	var paths []string
	if hasPaths {
		for _, p := range strings.Split(val, ",") {
			if k, _, ok := strings.Cut(p, "="); ok && k == "raw" {
				continue
			}
			if p == "" {
				return &hint.Error{Msg: fmt.Sprintf("Invalid --ssh %q: an empty path.", s),
					Fixes: []string{"Write --ssh ID=PATH[,PATH], each PATH an ssh agent socket or a private key file."}}
			}
			paths = append(paths, p)
		}
	}
	if len(paths) == 0 {
		sock, _ := lookup("SSH_AUTH_SOCK")
		if sock == "" {
			return &hint.Error{Msg: fmt.Sprintf("--ssh %s: no ssh agent: SSH_AUTH_SOCK is not set.", s),
				Fixes: []string{"Start an agent and add your key (eval \"$(ssh-agent)\" && ssh-add), or give a key file: --ssh " + id + "=$HOME/.ssh/id_ed25519."}}
		}
		if _, err := os.Stat(sock); err != nil {
			return &hint.Error{Msg: fmt.Sprintf("--ssh %s: the ssh agent socket %s (SSH_AUTH_SOCK) does not exist.", s, sock),
				Fixes: []string{"Start an agent (eval \"$(ssh-agent)\" && ssh-add), or give a key file: --ssh " + id + "=$HOME/.ssh/id_ed25519."}}
		}
		return nil
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			return &hint.Error{Msg: fmt.Sprintf("--ssh %s: %s does not exist.", s, p),
				Fixes: []string{"Give the path of an ssh agent socket or of a private key file."}}
		}
	}
	return nil
}

// Network modes of --network, as docker buildx accepts them.
var networkModes = []string{"default", "none", "host"}

// checkLabel checks an image --label KEY[=VALUE] (no value: an empty one,
// as docker does).
func checkLabel(l string) error {
	k, _, _ := strings.Cut(l, "=")
	if strings.TrimSpace(k) == "" {
		return &hint.Error{Msg: fmt.Sprintf("Invalid --label %q: the key is empty.", l), Fixes: []string{"Write --label KEY=VALUE (an image label)."}}
	}
	return nil
}

// cacheSpec returns a --cache-from/--cache-to value in the form buildctl
// needs: docker's shorthand REF (no "=") is type=registry,ref=REF.
func cacheSpec(s string) string {
	if !strings.Contains(s, "=") {
		return "type=registry,ref=" + s
	}
	return s
}

func checkCache(flag, s string) error {
	if strings.TrimSpace(s) == "" || strings.HasPrefix(s, ",") {
		return &hint.Error{Msg: fmt.Sprintf("Invalid --%s %q.", flag, s),
			Fixes: []string{fmt.Sprintf("Write --%s REF (a registry image) or --%s type=TYPE,... (e.g. type=local,%s=DIR or type=registry,ref=REF).",
				flag, flag, map[bool]string{true: "src", false: "dest"}[flag == "cache-from"])}}
	}
	return nil
}
