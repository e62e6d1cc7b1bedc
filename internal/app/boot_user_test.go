package app

import (
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/docker2vm/docker2vm/gondolin/guest"
	"github.com/docker2vm/docker2vm/internal/testenv/gondolintest"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
	"github.com/docker2vm/docker2vm/internal/testtar"
)

// The image's USER in a real guest, on both architectures: the entrypoint
// runner with the guest's busybox sh and our static docker2vm-setuser,
// under the guest's kernel.

const (
	userPasswd = "root:x:0:0:root:/root:/bin/sh\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n" +
		"app:x:1000:1000:app:/home/app:/bin/sh\n"
	userGroup = "root:x:0:\nnogroup:x:65534:\napp:x:1000:\nstaff:x:50:app\ndevs:x:60:nobody,app\n"
	whoami    = "#!/bin/sh\necho \"uid=$(id -u) gid=$(id -g) groups=$(id -G | tr ' ' '\\n' | sort -n | uniq | tr '\\n' ' ')home=$HOME cwd=$(pwd) args=$*\"\n"
)

// userForms are USER values and what the command must run as. Each is
// rendered into a runner of its own with the same code docker2vm writes
// /usr/bin/docker2vm-entrypoint with, so one boot covers them all.
var userForms = []struct {
	name, user string
	want       string // "" when the runner must refuse
}{
	{"name", "app", "uid=1000 gid=1000 groups=50 60 1000 home=/home/app"},
	{"uid", "1000", "uid=1000 gid=1000 groups=50 60 1000 home=/home/app"},
	{"uid-gid", "1000:60", "uid=1000 gid=60 groups=60 home=/home/app"},
	{"name-group", "app:staff", "uid=1000 gid=50 groups=50 home=/home/app"},
	{"name-gid", "nobody:4243", "uid=65534 gid=4243 groups=4243 home=/nonexistent"},
	{"uid-not-in-passwd", "4242", "uid=4242 gid=0 groups=0 home=/"},
	{"uid-gid-not-in-files", "4242:4243", "uid=4242 gid=4243 groups=4243 home=/"},
	{"unknown-name", "ghost", ""},
	{"unknown-group", "app:ghosts", ""},
}

func TestBootUser(t *testing.T) {
	forEachArch(t, func(t *testing.T, arch string) {
		reg, base := bootPrereqs(t, arch)
		env := []string{"PATH=/srv:/usr/bin:/bin", "GREETING=hello busybox"}
		files := []testtar.Entry{
			testtar.File("etc/passwd", userPasswd),
			testtar.File("etc/group", userGroup),
			testtar.Dir("home/"),
			testtar.Dir("home/app/").Mode(0o750).Owner(1000, 1000),
			testtar.File("srv/whoami.sh", whoami).Mode(0o755),
			testtar.Dir("runners/"),
		}
		for _, f := range userForms {
			script := guest.EntrypointScript(guest.ImageConfig{Env: env, WorkingDir: "/srv", User: f.user, Entrypoint: []string{"whoami.sh"}}, "")
			files = append(files, testtar.File("runners/"+f.name, script).Mode(0o755))
		}
		img, err := mutate.AppendLayers(imagetest.Busybox(t, gondolintest.BaseBusybox(t, base)),
			imagetest.NewLayer(t, testtar.Build(t, files...), imagetest.Gzip, true))
		if err != nil {
			t.Fatal(err)
		}
		img = imagetest.WithConfig(t, img, func(c *v1.Config) {
			c.User = "app"
			c.Env = env
			c.Entrypoint = []string{"whoami.sh"} // found on PATH, as docker run finds it
			c.Cmd = []string{"default"}
		})
		out := convertAssets(t, arch, reg.Push(t, "user:"+arch, img, nil), base)
		if !contains(readMeta(t, out).RuntimeInjection.InjectedFiles, guest.SetuserPath) {
			t.Errorf("meta.json does not list %s among the injected files", guest.SetuserPath)
		}
		cmds := [][]string{{"/usr/bin/docker2vm-entrypoint", "given"}}
		for _, f := range userForms {
			cmds = append(cmds, []string{"/runners/" + f.name, f.name})
		}
		res := gondolintest.Boot(t, out, gondolintest.BootOptions{}, cmds...)
		expectOutput(t, res, 0, "uid=1000 gid=1000 groups=50 60 1000 home=/home/app cwd=/srv args=given")
		for i, f := range userForms {
			r := res[i+1]
			if f.want == "" {
				if r.ExitCode == 0 || !strings.Contains(r.Stderr, "unable to find") {
					t.Errorf("USER %q: exit %d stdout %q stderr %q; want a refusal", f.user, r.ExitCode, r.Stdout, r.Stderr)
				}
				continue
			}
			expectOutput(t, res, i+1, f.want+" cwd=/srv args="+f.name)
		}
	})
}

// TestBootUserShellLess: a USER in an image without a shell, passwd or
// group file (the runner then uses the base's busybox sh).
func TestBootUserShellLess(t *testing.T) {
	forEachArch(t, func(t *testing.T, arch string) {
		reg, base := bootPrereqs(t, arch)
		img := imagetest.WithConfig(t, helloImage(t, arch), func(c *v1.Config) { c.User = "1000:1000" })
		out := convertAssets(t, arch, reg.Push(t, "hello-user:"+arch, img, nil), base)
		res := gondolintest.Boot(t, out, gondolintest.BootOptions{},
			[]string{"/usr/bin/docker2vm-entrypoint", "as-user"},
			[]string{"/hello", "as-root"},
		)
		// No group file lists the user: no supplementary groups, as runc.
		expectOutput(t, res, 0, "args=as-user cwd=/ uid=1000 greeting=from scratch gid=1000 groups=[] home=/")
		expectOutput(t, res, 1, "args=as-root cwd=/ uid=0")
	})
}
