package guest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/docker2vm/docker2vm/fstree"
	"github.com/docker2vm/docker2vm/gondolin"
	"github.com/docker2vm/docker2vm/gondolin/guestenv"
	"github.com/docker2vm/docker2vm/gondolin/setuser"
	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/shell"
)

// TestEntrypointShellcheck lints rendered entrypoint scripts: shellcheck
// must report nothing.
func TestEntrypointShellcheck(t *testing.T) {
	sc := require.Tool(t, "shellcheck")
	for _, tc := range []struct {
		name  string
		cfg   ImageConfig
		moved string
	}{
		{"no settings", ImageConfig{}, ""},
		{"root", ImageConfig{User: "root", Cmd: []string{"sh"}, WorkingDir: "/srv"}, ""},
		{"user and group", ImageConfig{User: "app:staff", Entrypoint: []string{"/init"}, Cmd: []string{"a b", "c'd", "$x `y`"}, Env: []string{"HOME=/h"}}, ImageInitPath},
		{"literal entrypoint", ImageConfig{User: "u$1", Entrypoint: []string{"sh", "-c", "echo $HOME"}, WorkingDir: "/$w"}, ""},
		{"uid", ImageConfig{User: "1000", Entrypoint: []string{"/app", "--flag"}}, ""},
		{"odd user", ImageConfig{User: "a'b\n:$(x)", Cmd: []string{"x"}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "docker2vm-entrypoint")
			if err := os.WriteFile(p, []byte(EntrypointScript(tc.cfg, tc.moved)), 0o755); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(sc, p).CombinedOutput(); err != nil || len(out) > 0 {
				t.Errorf("shellcheck: %v\n%s", err, out)
			}
		})
	}
}

const (
	testPasswd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:1000:1000:App:/home/app:/bin/sh
nohome:x:1001:1001::
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
twin:x:1002:1002:first:/home/twin1:/bin/sh
twin:x:1003:1003:second:/home/twin2:/bin/sh
badid:x:12x:1::/:
last:x:1004:100:no newline:/home/last:/bin/sh`
	testGroup = `root:x:0:root
daemon:x:1:
users:x:100:app,nohome
app:x:1000:
staff:x:50:daemon,app
docker:x:999:app
appx:x:998:appx,xapp
dup:x:300:
dup:x:301:
padded:x:0077:
wheel:x:10:root,app
lastgrp:x:4242:last`
)

// fakeSetuser stands in for docker2vm-setuser: it prints what it was asked
// to do instead of doing it, so the runner's user resolution can be
// tested without root.
const fakeSetuser = `#!/bin/sh
printf 'uid=%s gid=%s groups=%s path=%s\n' "$1" "$2" "$3" "$4"
shift 4
printf 'argv:'
printf ' [%s]' "$@"
printf '\nHOME=%s pwd=%s\n' "$HOME" "$(pwd -P)"
`

func writeFile(t *testing.T, p, data string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
}

// gondolinInitEnv is the environment Gondolin 0.12's rootfs init gives its
// agent before the image's ENV (see guestenv.AgentEnvPath).
var gondolinInitEnv = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "TMPDIR=/tmp",
	"XDG_CACHE_HOME=/tmp/.cache", "XDG_CONFIG_HOME=/tmp/.config", "XDG_DATA_HOME=/tmp/.local/share",
	"UV_CACHE_DIR=/tmp/.cache/uv", "UV_SYSTEM_CERTS=true", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"}

// agentEnv is the agent's environment in a guest: Gondolin's init's, then
// the image's ENV (its init sources ImageEnvPath), later entries winning.
func agentEnv(image []string) []string {
	return mergeEnv(gondolinInitEnv, image)
}

// mergeEnv applies the "K=V" entries of over to base, as getenv sees them.
func mergeEnv(base, over []string) []string {
	out := append([]string{}, base...)
	for _, kv := range over {
		k, _, _ := strings.Cut(kv, "=")
		out = slices.DeleteFunc(out, func(e string) bool { return strings.HasPrefix(e, k+"=") })
		out = append(out, kv)
	}
	return out
}

// runRunner writes the entrypoint script for cfg with paths and runs it
// with the shell argv and args, with exactly the environment env (the
// agent's, merged with what the caller passed). When paths.agentEnv is set
// it is written first with agent: what every command inherits. It returns
// stdout, stderr and the exit status.
func runRunner(t *testing.T, sh []string, cfg ImageConfig, paths runnerPaths, env []string, args ...string) (string, string, int) {
	t.Helper()
	script := filepath.Join(t.TempDir(), "docker2vm-entrypoint")
	writeFile(t, script, entrypointScript(cfg, "", paths), 0o755)
	cmd := exec.Command(sh[0], append(append(sh[1:], script), args...)...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return stdout.String(), stderr.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), 0
}

// TestEntrypointRunner runs the rendered entrypoint script with each
// shell against a fake root (passwd, group, PATH, WORKDIR) and a fake
// docker2vm-setuser, for every form of USER.
func TestEntrypointRunner(t *testing.T) {
	for _, sh := range []string{"dash", "busybox"} {
		if _, ok := require.Look(sh); !ok {
			require.Missing(t, "%s is not installed: the runner must work with it", sh)
		}
	}
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, root+"/etc/passwd", testPasswd, 0o644)
	writeFile(t, root+"/etc/group", testGroup, 0o644)
	writeFile(t, root+"/bin/tool", "#!/bin/sh\nprintf 'tool:'\nprintf ' [%s]' \"$@\"\necho\n", 0o755)
	writeFile(t, root+"/bin/echo", "#!/bin/sh\n", 0o755)
	writeFile(t, root+"/bin/data", "not a program", 0o644)
	writeFile(t, root+"/other/data", "#!/bin/sh\n", 0o755)
	writeFile(t, root+"/setuser", fakeSetuser, 0o755)
	work := root + "/work dir"
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	paths := runnerPaths{agentEnv: root + "/agent-env.sh", passwd: root + "/etc/passwd", group: root + "/etc/group", setuser: root + "/setuser"}

	ok := func(uid, gid, groups, home string) string {
		return fmt.Sprintf("uid=%s gid=%s groups=%s path=%s/bin/tool\nargv: [tool] [default arg]\nHOME=%s pwd=%s\n", uid, gid, groups, root, home, work)
	}
	app := ok("1000", "1000", "100,50,999,10", "/home/app")
	type tc struct {
		name, user string
		env        []string // the image's ENV besides PATH
		args       []string
		noFiles    bool // no passwd and group files
		want       string
		code       int
		errHas     string
	}
	cases := []tc{
		{name: "name", user: "app", want: app},
		{name: "uid of a passwd entry", user: "1000", want: app},
		{name: "uid with leading zeros", user: "0001000", want: app},
		{name: "name:group", user: "app:staff", want: ok("1000", "50", "", "/home/app")},
		{name: "name:gid", user: "app:999", want: ok("1000", "999", "", "/home/app")},
		{name: "uid:group", user: "1000:staff", want: ok("1000", "50", "", "/home/app")},
		{name: "uid:gid", user: "1000:1000", want: ok("1000", "1000", "", "/home/app")},
		{name: "uid without an entry", user: "4242", want: ok("4242", "0", "", "/")},
		{name: "uid:gid without entries", user: "4242:4243", want: ok("4242", "4243", "", "/")},
		{name: "uid without an entry:group", user: "4242:users", want: ok("4242", "100", "", "/")},
		{name: "gid with leading zeros in the group file", user: "app:77", want: ok("1000", "77", "", "/home/app")},
		{name: "group with leading zeros in its gid", user: "app:padded", want: ok("1000", "77", "", "/home/app")},
		{name: "first of two groups of one name", user: "app:dup", want: ok("1000", "300", "", "/home/app")},
		{name: "first of two users of one name", user: "twin", want: ok("1002", "1002", "", "/home/twin1")},
		{name: "nobody", user: "nobody", want: ok("65534", "65534", "", "/nonexistent")},
		{name: "empty home", user: "nohome", want: ok("1001", "1001", "100", "/")},
		{name: "last lines without newline", user: "last", want: ok("1004", "100", "4242", "/home/last")},
		{name: "member names match whole", user: "daemon", want: ok("1", "1", "50", "/usr/sbin")},
		{name: "empty user is uid 0", user: ":staff", want: ok("0", "50", "", "/root")},
		{name: "root with a group", user: "root:staff", want: ok("0", "50", "", "/root")},
		{name: "text after a second colon", user: "app:staff:x", want: ok("1000", "50", "", "/home/app")},
		{name: "image ENV sets HOME", user: "app", env: []string{"HOME=/image/home"}, want: ok("1000", "1000", "100,50,999,10", "/image/home")},
		{name: "no passwd or group file, uid", user: "4242", noFiles: true, want: ok("4242", "0", "", "/")},
		{name: "no passwd or group file, uid:gid", user: "4242:7", noFiles: true, want: ok("4242", "7", "", "/")},
		{name: "root runs the command as is", user: "root", want: "tool: [default arg]\n"},
		{name: "uid 0 runs the command as is", user: "0:0", args: []string{"tool", "x"}, want: "tool: [x]\n"},

		{name: "arguments replace CMD", user: "app", args: []string{"tool", "a b", ""},
			want: fmt.Sprintf("uid=1000 gid=1000 groups=100,50,999,10 path=%s/bin/tool\nargv: [tool] [a b] []\nHOME=/home/app pwd=%s\n", root, work)},
		{name: "a builtin's name is a file on PATH", user: "app", args: []string{"echo", "hi"},
			want: fmt.Sprintf("uid=1000 gid=1000 groups=100,50,999,10 path=%s/bin/echo\nargv: [echo] [hi]\nHOME=/home/app pwd=%s\n", root, work)},
		{name: "a file that is not executable is skipped", user: "app", args: []string{"data"},
			want: fmt.Sprintf("uid=1000 gid=1000 groups=100,50,999,10 path=%s/other/data\nargv: [data]\nHOME=/home/app pwd=%s\n", root, work)},
		{name: "a path is used as it is", user: "app", args: []string{"./rel/prog", "x"},
			want: fmt.Sprintf("uid=1000 gid=1000 groups=100,50,999,10 path=./rel/prog\nargv: [./rel/prog] [x]\nHOME=/home/app pwd=%s\n", work)},

		{name: "missing user", user: "ghost", code: 125, errHas: "docker2vm-entrypoint: unable to find user ghost: no matching entries in passwd file\n"},
		{name: "missing user:group", user: "ghost:staff", code: 125, errHas: "unable to find user ghost: no matching entries in passwd file"},
		{name: "missing group", user: "app:ghosts", code: 125, errHas: "docker2vm-entrypoint: unable to find group ghosts: no matching entries in group file\n"},
		{name: "missing group of a uid", user: "4242:ghosts", code: 125, errHas: "unable to find group ghosts: no matching entries in group file"},
		{name: "no passwd file, name", user: "app", noFiles: true, code: 125, errHas: "unable to find user app: no matching entries in passwd file"},
		{name: "no group file, group name", user: "4242:staff", noFiles: true, code: 125, errHas: "unable to find group staff: no matching entries in group file"},
		{name: "uid out of range", user: "2147483648", code: 125, errHas: "uids and gids must be in range 0-2147483647"},
		{name: "gid out of range", user: "app:99999999999999999999", code: 125, errHas: "uids and gids must be in range 0-2147483647"},
		{name: "largest uid in range", user: "2147483647", want: ok("2147483647", "0", "", "/")},
		{name: "invalid uid in passwd", user: "badid", code: 125, errHas: "user badid has an invalid uid"},
		{name: "a signed uid is a name", user: "+1000", code: 125, errHas: "unable to find user +1000"},
		{name: "missing command", user: "app", args: []string{"nosuch"}, code: 127, errHas: `docker2vm-entrypoint: exec: "nosuch": executable file not found in $PATH`},
	}
	for name, sh := range shells(t) {
		t.Run(name, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					p := paths
					if c.noFiles {
						p.passwd, p.group = root+"/etc/nopasswd", root+"/etc/nogroup"
					}
					env := append([]string{"PATH=" + root + "/bin:" + root + "/other"}, c.env...)
					p.agentEnv = filepath.Join(t.TempDir(), "agent-env.sh")
					writeFile(t, p.agentEnv, guestenv.AgentEnvScript(agentEnv(env)), 0o644)
					cfg := ImageConfig{User: c.user, Env: env, WorkingDir: work, Cmd: []string{"tool", "default arg"}}
					stdout, stderr, code := runRunner(t, sh, cfg, p, agentEnv(env), c.args...)
					if code != c.code {
						t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, c.code, stdout, stderr)
					}
					if c.code == 0 && (stdout != c.want || stderr != "") {
						t.Errorf("stdout:\n%s\nwant:\n%s\nstderr: %s", stdout, c.want, stderr)
					}
					if c.code != 0 && (!strings.Contains(stderr, c.errHas) || stdout != "") {
						t.Errorf("stderr %q, want it to contain %q; stdout %q", stderr, c.errHas, stdout)
					}
				})
			}
		})
	}
}

// hostArch is the host's architecture as Gondolin names it, "" if neither.
func hostArch() string {
	return map[string]string{"amd64": gondolin.ArchX86_64, "arm64": gondolin.ArchAarch64}[runtime.GOARCH]
}

// TestEntrypointRunnerSwitches runs the rendered entrypoint script with
// the real docker2vm-setuser (as root) and checks the credentials, HOME
// and argv[0] of the command it starts.
func TestEntrypointRunnerSwitches(t *testing.T) {
	require.Root(t, "to switch users")
	arch := hostArch()
	if arch == "" {
		t.Skipf("no docker2vm-setuser for %s", runtime.GOARCH)
	}
	// Every user may enter this directory (t.TempDir's are 0700).
	dir, err := os.MkdirTemp("", "entrypoint-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin, err := setuser.Binary(arch)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir+"/setuser", string(bin), 0o755)
	writeFile(t, dir+"/etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:65534:65533:App:/home/app:/bin/sh\n", 0o644)
	writeFile(t, dir+"/etc/group", "grp:x:65533:\nextra:x:4000:app\nmore:x:4001:other,app\n", 0o644)
	paths := runnerPaths{agentEnv: dir + "/agent-env.sh", passwd: dir + "/etc/passwd", group: dir + "/etc/group", setuser: dir + "/setuser"}
	writeFile(t, paths.agentEnv, guestenv.AgentEnvScript(agentEnv([]string{"PATH=/usr/bin:/bin"})), 0o644)
	show := []string{"sh", "-c", `grep -E '^(Uid|Gid|Groups):' /proc/self/status; echo "HOME=$HOME"; tr '\0' ' ' </proc/$$/cmdline; echo; pwd`}

	for _, tc := range []struct {
		user string
		want []string
	}{
		{"app", []string{"Uid:\t65534\t65534\t65534\t65534", "Gid:\t65533\t65533\t65533\t65533", "Groups:\t4000 4001", "HOME=/home/app", "sh -c "}},
		// A group in USER: no supplementary groups, as runc.
		{"app:4002", []string{"Uid:\t65534\t65534\t65534\t65534", "Gid:\t4002\t4002\t4002\t4002", "Groups:", "HOME=/home/app"}},
		{"1234:extra", []string{"Uid:\t1234\t1234\t1234\t1234", "Gid:\t4000\t4000\t4000\t4000", "Groups:", "HOME=/"}},
	} {
		t.Run(tc.user, func(t *testing.T) {
			for name, sh := range shells(t) {
				cfg := ImageConfig{User: tc.user, Env: []string{"PATH=/usr/bin:/bin"}, WorkingDir: dir, Cmd: show}
				stdout, stderr, code := runRunner(t, sh, cfg, paths, agentEnv(cfg.Env))
				if code != 0 {
					t.Fatalf("%s: exit %d\n%s%s", name, code, stdout, stderr)
				}
				lines := strings.Split(stdout, "\n")
				for i := range lines {
					lines[i] = strings.TrimRight(lines[i], " \t")
				}
				for _, w := range tc.want {
					found := false
					for _, l := range lines {
						// The groups line whole; the others by prefix.
						found = found || l == w || !strings.HasPrefix(w, "Groups:") && strings.HasPrefix(l, w)
					}
					if !found {
						t.Errorf("%s: no line %q in:\n%s", name, w, stdout)
					}
				}
				if !strings.Contains(stdout, "\n"+dir+"\n") {
					t.Errorf("%s: not run in WORKDIR %s:\n%s", name, dir, stdout)
				}
			}
		})
	}
	for name, sh := range shells(t) {
		stdout, stderr, code := runRunner(t, sh, ImageConfig{User: "app", Cmd: []string{"/nonexistent/prog"}}, paths, agentEnv([]string{"PATH=/usr/bin:/bin"}))
		if code != 127 || !strings.Contains(stderr, "docker2vm-setuser: exec /nonexistent/prog: no such file or directory") {
			t.Errorf("%s: exit %d, stdout %q stderr %q", name, code, stdout, stderr)
		}
	}
}

// TestInjectSetuser: an image whose USER is not root gets the switcher
// for the base's architecture; a root one gets none.
func TestInjectSetuser(t *testing.T) {
	for _, tc := range []struct {
		user, arch string
		want       bool
	}{
		{"nobody", gondolin.ArchX86_64, true},
		{"1000:1000", gondolin.ArchAarch64, true},
		{"root:wheel", gondolin.ArchX86_64, true},
		{"", gondolin.ArchX86_64, false},
		{"root", gondolin.ArchAarch64, false},
		{"0:0", gondolin.ArchX86_64, false},
	} {
		t.Run(tc.user+"/"+tc.arch, func(t *testing.T) {
			g, store := readGlueFrom(t, alpineBase())
			g.Arch = tc.arch
			img := buildTree(t, store, busyboxImage())
			inj, err := Inject(img, g, ImageConfig{User: tc.user, Cmd: []string{"sh"}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			n, _ := img.Lookup(strings.TrimPrefix(SetuserPath, "/"))
			if !tc.want {
				if n != nil || has(inj.Files, SetuserPath) {
					t.Fatal("switcher added for a root USER")
				}
				return
			}
			if n == nil || n.Type != fstree.TypeRegular || n.Mode != 0o755 || n.UID != 0 || n.GID != 0 || !has(inj.Files, SetuserPath) {
				t.Fatalf("switcher %+v, files %v", n, inj.Files)
			}
			want, _ := setuser.Binary(tc.arch)
			if !bytes.Equal(fstree.Bytes(n.Content), want) {
				t.Fatalf("the switcher is not the %s one", tc.arch)
			}
			if ep := fileText(t, img, EntrypointPath); !strings.Contains(ep, "d2v_setuser="+shell.Quote(SetuserPath)+"\n") {
				t.Fatalf("the entrypoint does not use %s:\n%s", SetuserPath, ep)
			}
		})
	}

	// The image's own file at that path is not replaced.
	g, store := readGlueFrom(t, alpineBase())
	m := busyboxImage()
	m[strings.TrimPrefix(SetuserPath, "/")] = "theirs"
	_, err := Inject(buildTree(t, store, m), g, ImageConfig{User: "app"}, nil)
	var e *hint.Error
	if !errors.As(err, &e) || !strings.Contains(err.Error(), "already has "+SetuserPath) {
		t.Fatalf("err = %v", err)
	}
	// A glue without a known architecture gets none of docker2vm's
	// programs (the guest's environment and the user switcher).
	g, store = readGlueFrom(t, alpineBase())
	g.Arch = ""
	if _, err := Inject(buildTree(t, store, busyboxImage()), g, ImageConfig{User: "app"}, nil); err == nil || !strings.Contains(err.Error(), "for architecture") {
		t.Fatalf("err = %v", err)
	}
}

// TestEntrypointRunnerEnvironment: the command's environment is what
// `docker run -e` gives: the image's ENV, the caller's variables over it,
// PATH, HOSTNAME and HOME where neither set them, and nothing else of what
// Gondolin's init gives every command, but its CA variables.
func TestEntrypointRunnerEnvironment(t *testing.T) {
	root := t.TempDir()
	writeFile(t, root+"/etc/passwd", testPasswd, 0o644)
	writeFile(t, root+"/etc/group", testGroup, 0o644)
	// The shell's own bookkeeping is left out of the comparison.
	writeFile(t, root+"/printenv", "#!/bin/sh\n/usr/bin/env | /usr/bin/grep -Ev '^(PWD|OLDPWD|SHLVL|_)=' | LC_ALL=C /usr/bin/sort\n", 0o755)
	paths := runnerPaths{agentEnv: root + "/agent-env.sh", passwd: root + "/etc/passwd", group: root + "/etc/group", setuser: root + "/setuser"}
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	const ca = "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"
	for _, tc := range []struct {
		name    string
		image   []string // ENV
		caller  []string // vm.exec's env
		noAgent bool     // no agent env file (a guest without docker2vm-guestenv)
		want    []string
	}{
		{name: "image ENV only", image: []string{"PATH=/app/bin:/usr/bin", "FOO=image"},
			want: []string{"FOO=image", "HOME=/root", "HOSTNAME=" + host, "PATH=/app/bin:/usr/bin", ca, "UV_SYSTEM_CERTS=true"}},
		{name: "the caller's variables win", image: []string{"PATH=/usr/bin", "FOO=image", "KEEP=image"},
			caller: []string{"FOO=caller", "NEW=caller", "PATH=/caller/bin"},
			want:   []string{"FOO=caller", "HOME=/root", "HOSTNAME=" + host, "KEEP=image", "NEW=caller", "PATH=/caller/bin", ca, "UV_SYSTEM_CERTS=true"}},
		{name: "the caller's HOME and TMPDIR", image: []string{"PATH=/usr/bin"}, caller: []string{"HOME=/caller", "TMPDIR=/t"},
			want: []string{"HOME=/caller", "HOSTNAME=" + host, "PATH=/usr/bin", ca, "TMPDIR=/t", "UV_SYSTEM_CERTS=true"}},
		{name: "no PATH in the image: Docker's", image: []string{"A=1"},
			want: []string{"A=1", "HOME=/root", "HOSTNAME=" + host, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", ca, "UV_SYSTEM_CERTS=true"}},
		{name: "the image's HOSTNAME and HOME", image: []string{"PATH=/usr/bin", "HOSTNAME=img", "HOME=/srv"},
			want: []string{"HOME=/srv", "HOSTNAME=img", "PATH=/usr/bin", ca, "UV_SYSTEM_CERTS=true"}},
		{name: "the image's CA variable", image: []string{"PATH=/usr/bin", "SSL_CERT_FILE=/image.pem"},
			want: []string{"HOME=/root", "HOSTNAME=" + host, "PATH=/usr/bin", "SSL_CERT_FILE=/image.pem", "UV_SYSTEM_CERTS=true"}},
		{name: "duplicates: the last wins", image: []string{"PATH=/usr/bin", "D=1", "D=2"},
			want: []string{"D=2", "HOME=/root", "HOSTNAME=" + host, "PATH=/usr/bin", ca, "UV_SYSTEM_CERTS=true"}},
		{name: "odd values stay literal", image: []string{"PATH=/usr/bin", "Q=it's $HOME `x` \\n"},
			want: []string{"HOME=/root", "HOSTNAME=" + host, "PATH=/usr/bin", "Q=it's $HOME `x` \\n", ca, "UV_SYSTEM_CERTS=true"}},
		{name: "no agent file: every variable is the caller's", image: []string{"PATH=/usr/bin", "FOO=image"}, noAgent: true,
			caller: []string{"FOO=caller"},
			want: []string{"FOO=caller", "HOME=/root", "HOSTNAME=" + host, "PATH=/usr/bin", ca, "TMPDIR=/tmp", "UV_CACHE_DIR=/tmp/.cache/uv", "UV_SYSTEM_CERTS=true",
				"XDG_CACHE_HOME=/tmp/.cache", "XDG_CONFIG_HOME=/tmp/.config", "XDG_DATA_HOME=/tmp/.local/share"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for name, sh := range shells(t) {
				p := paths
				p.agentEnv = filepath.Join(t.TempDir(), "agent-env.sh")
				if !tc.noAgent {
					writeFile(t, p.agentEnv, guestenv.AgentEnvScript(agentEnv(tc.image)), 0o644)
				}
				cfg := ImageConfig{Env: tc.image, Cmd: []string{root + "/printenv"}}
				stdout, stderr, code := runRunner(t, sh, cfg, p, mergeEnv(agentEnv(tc.image), tc.caller))
				if code != 0 {
					t.Fatalf("%s: exit %d: %s", name, code, stderr)
				}
				if got := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n"); !slices.Equal(got, tc.want) {
					t.Errorf("%s: environment\n%s\nwant\n%s", name, strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
				}
			}
		})
	}
}

// TestEntrypointRunnerMakesWorkdir: a WORKDIR missing at run time is
// made, as runc makes a container's.
func TestEntrypointRunnerMakesWorkdir(t *testing.T) {
	root := t.TempDir()
	writeFile(t, root+"/etc/passwd", testPasswd, 0o644)
	paths := runnerPaths{agentEnv: root + "/agent-env.sh", passwd: root + "/etc/passwd", group: root + "/etc/group"}
	work := root + "/not/yet"
	for name, sh := range shells(t) {
		cfg := ImageConfig{Env: []string{"PATH=/usr/bin:/bin"}, WorkingDir: work, Cmd: []string{"pwd"}}
		stdout, stderr, code := runRunner(t, sh, cfg, paths, agentEnv(cfg.Env))
		if code != 0 || stdout != work+"\n" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q", name, code, stdout, stderr)
		}
		os.RemoveAll(root + "/not")
	}
}
