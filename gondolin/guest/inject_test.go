package guest

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker2vm/docker2vm/fstree"
	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/internal/require"
)

func lookupFollow(t *testing.T, tr *fstree.Tree, p string) (*fstree.Inode, string) {
	t.Helper()
	r := &imgResolver{t: tr, inj: &Injection{}}
	l, err := r.walk(p, true, false)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return l.node, l.path
}

func fileText(t *testing.T, tr *fstree.Tree, p string) string {
	t.Helper()
	n, _ := tr.Lookup(strings.TrimPrefix(p, "/"))
	if n == nil || n.Type != fstree.TypeRegular {
		t.Fatalf("%s is not a file", p)
	}
	return string(fstree.Bytes(n.Content))
}

func has(s []string, x string) bool { return contains(s, x) }

// checkBootable asserts what Gondolin's init needs is in place.
func checkBootable(t *testing.T, tr *fstree.Tree) {
	t.Helper()
	r := &imgResolver{t: tr, inj: &Injection{}}
	for _, tool := range InitTools {
		if !r.hasTool(tool) {
			t.Errorf("tool %s not found on init's PATH", tool)
		}
	}
	for _, d := range requiredDirs {
		if n, _ := lookupFollow(t, tr, d.path); n == nil || n.Type != fstree.TypeDir {
			t.Errorf("%s missing", d.path)
		}
	}
	if !strings.Contains(fileText(t, tr, "/init"), "exec /usr/bin/sandboxd") {
		t.Error("/init is not Gondolin's")
	}
	for _, p := range []string{SandboxdPath, SandboxfsPath, EntrypointPath, ImageEnvPath} {
		if n, _ := lookupFollow(t, tr, p); n == nil || n.Type != fstree.TypeRegular {
			t.Errorf("%s missing", p)
		}
	}
}

func busyboxImage() map[string]spec {
	m := map[string]spec{"bin/busybox": "static-busybox", "etc/passwd": "0644:root:x:0:0:root:/root:/bin/sh\n"}
	for _, a := range InitTools {
		m["bin/"+a] = "->busybox"
	}
	return m
}

func TestInjectBusyboxImage(t *testing.T) {
	g, store := readGlueFrom(t, alpineBase())
	img := buildTree(t, store, busyboxImage())
	var released int
	inj, err := Inject(img, g, ImageConfig{Cmd: []string{"sh"}, Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}},
		func(fstree.Content) { released++ })
	if err != nil {
		t.Fatal(err)
	}
	checkBootable(t, img)
	if len(inj.Symlinks) != 0 {
		t.Fatalf("tools added to an image that has them: %v", inj.Symlinks)
	}
	if n, ok := img.Lookup("usr/lib/docker2vm"); !ok || n.NumChildren() != 1 {
		t.Fatal("the private dir holds more than Gondolin's agent")
	}
	for _, want := range []string{"/init", SandboxdPath, AgentPath, SandboxfsPath, SandboxsshPath, ImageEnvPath, EntrypointPath, "/etc/hosts", "/etc/hostname"} {
		if !has(inj.Files, want) {
			t.Errorf("Files lacks %s: %v", want, inj.Files)
		}
	}
	for _, want := range []string{"/tmp", "/root", "/data", "/etc/gondolin/mitm", "/lib/modules/6.6.1-virt", "/usr/bin"} {
		if !has(inj.Dirs, want) {
			t.Errorf("Dirs lacks %s: %v", want, inj.Dirs)
		}
	}
	if n, _ := img.Lookup("tmp"); n.Mode != 0o1777 {
		t.Errorf("/tmp mode %o", n.Mode)
	}
	if n, _ := img.Lookup("root"); n.Mode != 0o700 {
		t.Errorf("/root mode %o", n.Mode)
	}
	if n, _ := img.Lookup("usr/bin/docker2vm-entrypoint"); n.Mode != 0o755 {
		t.Errorf("entrypoint mode %o", n.Mode)
	}
	if !strings.Contains(fileText(t, img, ImageEnvPath), "export PATH='/usr/local/sbin:") {
		t.Error("env file")
	}
	// busybox and kmod (and the libs) were not used: released.
	if released < 2 {
		t.Errorf("released %d unused glue contents", released)
	}
}

func TestInjectScratch(t *testing.T) {
	g, store := readGlueFrom(t, alpineBase())
	img := buildTree(t, store, map[string]spec{"app": "static-binary"})
	inj, err := Inject(img, g, ImageConfig{Entrypoint: []string{"/app"}, User: "1000:1000", WorkingDir: "/work"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkBootable(t, img)
	sh, _ := img.Lookup("bin/sh")
	if sh.Type != fstree.TypeSymlink || sh.Target != PrivateBinDir+"/busybox" {
		t.Fatalf("/bin/sh = %+v", sh)
	}
	if mp, _ := img.Lookup("sbin/modprobe"); mp == nil || mp.Target != PrivateBinDir+"/kmod" {
		t.Fatalf("modprobe %+v", mp)
	}
	if n, _ := img.Lookup("usr/bin/seq"); n == nil {
		t.Fatal("seq not where the base has it")
	}
	for _, want := range []string{"/lib/ld-musl-x86_64.so.1", "/usr/lib/libzstd.so.1.5.5", PrivateBinDir + "/busybox", PrivateBinDir + "/kmod", SetuserPath} {
		if !has(inj.Files, want) {
			t.Errorf("Files lacks %s", want)
		}
	}
	for _, want := range []string{"/bin/sh", "/usr/lib/libzstd.so.1", "/lib/libc.musl-x86_64.so.1"} {
		if !has(inj.Symlinks, want) {
			t.Errorf("Symlinks lacks %s: %v", want, inj.Symlinks)
		}
	}
	if _, ok := img.Lookup("usr/lib/libcrypto.so.3"); ok {
		t.Error("unneeded lib added")
	}
	if n, _ := img.Lookup("work"); n == nil || !n.IsDir() {
		t.Error("WorkingDir not created")
	}
	if n, _ := img.Lookup("app"); fstree.Bytes(n.Content) == nil || string(fstree.Bytes(n.Content)) != "static-binary" {
		t.Error("image file changed")
	}
}

func TestInjectMergedUsr(t *testing.T) {
	g, store := readGlueFrom(t, alpineBase())
	m := map[string]spec{
		"bin": "->usr/bin", "sbin": "->usr/sbin", "lib": "->usr/lib", "lib64": "->usr/lib64",
		"usr/sbin": "dir", "usr/lib/x86_64-linux-gnu/libc.so.6": "0644:glibc",
		"usr/bin/dash": "dash", "usr/bin/sh": "->dash", "etc/passwd": "0644:root:x:0:0::/root:/bin/sh\n",
	}
	for _, tool := range []string{"mount", "mkdir", "chmod", "cat", "basename", "tr", "mknod", "ln", "ls", "grep", "sleep", "cp"} {
		m["usr/bin/"+tool] = "coreutils-" + tool
	}
	img := buildTree(t, store, m)
	inj, err := Inject(img, g, ImageConfig{Cmd: []string{"bash"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkBootable(t, img)
	for p, want := range map[string]string{"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib"} {
		if n, _ := img.Lookup(p); n.Type != fstree.TypeSymlink || n.Target != want {
			t.Errorf("/%s replaced: %+v", p, n)
		}
	}
	if !has(inj.Symlinks, "/usr/sbin/modprobe") || !has(inj.Symlinks, "/usr/bin/seq") {
		t.Errorf("symlinks %v", inj.Symlinks)
	}
	if !has(inj.Files, "/usr/lib/ld-musl-x86_64.so.1") || !has(inj.Dirs, "/usr/lib/modules/6.6.1-virt") {
		t.Errorf("files %v dirs %v", inj.Files, inj.Dirs)
	}
	if has(inj.Symlinks, "/usr/bin/sh") || has(inj.Symlinks, "/bin/sh") {
		t.Error("sh added although the image has one")
	}
	if fileText(t, img, "/usr/bin/mount") != "coreutils-mount" {
		t.Error("image tool replaced")
	}
}

func TestInjectImageInit(t *testing.T) {
	for _, tc := range []struct {
		name, init string
		check      func(t *testing.T, n *fstree.Inode)
	}{
		{"file", "s6-overlay-init", func(t *testing.T, n *fstree.Inode) {
			if string(fstree.Bytes(n.Content)) != "s6-overlay-init" {
				t.Error("content")
			}
		}},
		{"relative symlink", "->sbin/tini", func(t *testing.T, n *fstree.Inode) {
			if n.Target != "/sbin/tini" {
				t.Errorf("target %q", n.Target)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, store := readGlueFrom(t, alpineBase())
			m := busyboxImage()
			m["init"] = tc.init
			m["sbin/tini"] = "tini"
			img := buildTree(t, store, m)
			inj, err := Inject(img, g, ImageConfig{Entrypoint: []string{"/init"}, Cmd: []string{"/init", "x"}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			checkBootable(t, img)
			if len(inj.Moved) != 1 || inj.Moved[0] != (Move{"/init", ImageInitPath}) {
				t.Fatalf("moved %v", inj.Moved)
			}
			moved, _ := img.Lookup(strings.TrimPrefix(ImageInitPath, "/"))
			tc.check(t, moved)
			ep := fileText(t, img, EntrypointPath)
			if !strings.Contains(ep, "set -- '"+ImageInitPath+"' \"$@\"") || !strings.Contains(ep, "set -- '"+ImageInitPath+"' 'x'") {
				t.Errorf("entrypoint does not run the moved init:\n%s", ep)
			}
		})
	}
}

func TestInjectConflicts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(m map[string]spec)
		want   string
	}{
		{"own sandboxd", func(m map[string]spec) { m["usr/bin/sandboxd"] = "theirs" }, "the image has its own /usr/bin/sandboxd"},
		{"sandboxingress symlink", func(m map[string]spec) { m["usr/bin/sandboxingress"] = "->/bin/busybox" }, "its own /usr/bin/sandboxingress"},
		{"sandboxd via merged usr", func(m map[string]spec) { m["usr"] = "->opt/usr"; m["opt/usr/bin/sandboxd"] = "x" }, "at /opt/usr/bin/sandboxd"},
		{"tmp is a file", func(m map[string]spec) { m["tmp"] = "0644:x" }, "file at /tmp"},
		{"dangling sh", func(m map[string]spec) { m["bin/sh"] = "->/nonexistent/dash" }, "sh"},
		{"own entrypoint", func(m map[string]spec) { m["usr/bin/docker2vm-entrypoint"] = "x" }, EntrypointPath},
		{"usr/bin is a file", func(m map[string]spec) { m["usr"] = "0644:x" }, "not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, store := readGlueFrom(t, alpineBase())
			m := busyboxImage()
			tc.mutate(m)
			_, err := Inject(buildTree(t, store, m), g, ImageConfig{}, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			var e *hint.Error
			if !errors.As(err, &e) {
				t.Fatalf("not a *hint.Error: %T", err)
			}
		})
	}
}

func TestInjectConfinedSymlinks(t *testing.T) {
	g, store := readGlueFrom(t, alpineBase())
	m := busyboxImage()
	m["etc/gondolin"] = "->../../../../host/etc"
	m["etc/profile.d"] = "->/../../../outside/profile"
	m["data"] = "->/"
	m["lib"] = "->../../.."
	img := buildTree(t, store, m)
	inj, err := Inject(img, g, ImageConfig{Env: []string{"A=1"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkBootable(t, img)
	// Everything landed inside the tree, under the image's symlinks.
	if n, _ := img.Lookup("host/etc/mitm"); n == nil || !n.IsDir() {
		t.Error("/etc/gondolin/mitm not created at its confined target /host/etc/mitm")
	}
	if n, _ := img.Lookup("etc/gondolin"); n.Type != fstree.TypeSymlink {
		t.Error("/etc/gondolin replaced")
	}
	if !has(inj.Files, "/outside/profile/gondolin-image-env.sh") {
		t.Errorf("env file at %v", inj.Files)
	}
	if !has(inj.Dirs, "/modules/6.6.1-virt") {
		t.Errorf("modules through /lib -> ../../.. should land at /modules: %v", inj.Dirs)
	}
	for _, p := range append(append(inj.Files, inj.Dirs...), inj.Symlinks...) {
		if strings.Contains(p, "..") || !strings.HasPrefix(p, "/") {
			t.Errorf("path %q", p)
		}
	}
}

func TestEnvScript(t *testing.T) {
	env := []string{"PATH=/opt/bin:/usr/bin:/bin", "Q=it's \"quoted\"", "NL=line1\nline2", "D=$HOME `id` \\n", "EMPTY=", "EQ=a=b", "bad-key=1", "NOEQ"}
	script, notes := EnvScript(env)
	if len(notes) != 2 {
		t.Fatalf("notes %v", notes)
	}
	out, err := runSh(t, script+`
printf '%s|' "$PATH" "$Q" "$NL" "$D" "$EMPTY" "$EQ"
`)
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	want := "/opt/bin:/usr/bin:/bin|it's \"quoted\"|line1\nline2|$HOME `id` \\n||a=b|"
	if out != want {
		t.Fatalf("got %q\nwant %q", out, want)
	}
}

func TestEntrypointScript(t *testing.T) {
	wd := t.TempDir()
	pr := []string{"printf", "[%s]"}
	for _, tc := range []struct {
		name string
		cfg  ImageConfig
		args []string
		want string
	}{
		{"entrypoint and cmd", ImageConfig{Entrypoint: pr, Cmd: []string{"a b", "c'd"}}, nil, "[a b][c'd]"},
		{"args replace cmd", ImageConfig{Entrypoint: pr, Cmd: []string{"x"}}, []string{"1", "$2"}, "[1][$2]"},
		{"entrypoint only", ImageConfig{Entrypoint: []string{"printf", "%s", "only"}}, nil, "only"},
		{"cmd only", ImageConfig{Cmd: []string{"printf", "[%s]", "cmd"}}, nil, "[cmd]"},
		{"args without entrypoint", ImageConfig{Cmd: []string{"false"}}, []string{"printf", "%s", "arg"}, "arg"},
		{"workdir", ImageConfig{WorkingDir: wd, Cmd: []string{"pwd"}}, nil, wd + "\n"},
		{"nothing", ImageConfig{}, nil, "no ENTRYPOINT or CMD"},
		{"root user is no switch", ImageConfig{User: "root", Cmd: []string{"printf", "ok"}}, nil, "ok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _ := runSh(t, EntrypointScript(tc.cfg, ""), tc.args...)
			if !strings.Contains(out, tc.want) {
				t.Fatalf("got %q, want %q", out, tc.want)
			}
		})
	}
}

// shells lists the POSIX shells on the host to run generated scripts
// with, including bash invoked as sh (the /bin/sh of Fedora, RHEL/UBI,
// Arch). Missing ones are skipped.
func shells(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, name := range []string{"dash", "bash"} {
		if p, err := exec.LookPath(name); err == nil {
			out[name] = []string{p}
		}
	}
	if p, err := exec.LookPath("bash"); err == nil {
		sh := filepath.Join(t.TempDir(), "sh")
		if err := os.Symlink(p, sh); err == nil {
			out["bash as sh"] = []string{sh}
		}
	}
	if p, err := exec.LookPath("busybox"); err == nil {
		out["busybox sh"] = []string{p, "sh"}
	}
	if len(out) == 0 {
		require.Missing(t, "no shell on the host")
	}
	return out
}

// TestEnvScriptReadonlyNames: an image ENV of UID (common) or PPID must not
// abort Gondolin's `set -eu` init where /bin/sh is bash, which refuses to
// assign them even with `|| :`.
func TestEnvScriptReadonlyNames(t *testing.T) {
	script, notes := EnvScript([]string{"UID=1000", "A=1", "PPID=7", "NUL=a\x00b; touch /tmp/x", "EUID=0", "UID=1001"})
	if strings.Contains(script, "NUL=") {
		t.Fatalf("a value with a NUL byte was written:\n%s", script)
	}
	var nulNote bool
	for _, n := range notes {
		nulNote = nulNote || strings.Contains(n, `"NUL=a\x00b`)
	}
	if !nulNote {
		t.Errorf("no note for the NUL entry: %v", notes)
	}
	dir := t.TempDir()
	envFile := filepath.Join(dir, "env.sh")
	if err := os.WriteFile(envFile, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	initScript := filepath.Join(dir, "init")
	os.WriteFile(initScript, []byte("set -eu\nif [ -r "+envFile+" ]; then\n  . "+envFile+"\nfi\nprintf 'A=%s\\n' \"$A\"\nenv | grep -E '^(UID|PPID)=' | sort\n"), 0o755)
	for name, argv := range shells(t) {
		t.Run(name, func(t *testing.T) {
			out, err := exec.Command(argv[0], append(argv[1:], initScript)...).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "A=1\n") {
				t.Fatalf("sourcing the env file failed: %v\n%s", err, out)
			}
			if strings.HasPrefix(name, "bash") {
				return // bash keeps its own UID/PPID; nothing more to expect
			}
			if !strings.Contains(string(out), "PPID=7\nUID=1001\n") {
				t.Errorf("UID/PPID not exported where the shell allows it:\n%s", out)
			}
		})
	}
}

func TestInjectRejectsNUL(t *testing.T) {
	g, store := readGlueFrom(t, alpineBase())
	for _, cfg := range []ImageConfig{
		{Cmd: []string{"sh", "-c", "echo\x00; rm -rf /"}},
		{Entrypoint: []string{"/app\x00"}},
		{WorkingDir: "/w\x00x"},
		{User: "app\x00"},
	} {
		_, err := Inject(buildTree(t, store, busyboxImage()), g, cfg, nil)
		var e *hint.Error
		if err == nil || !strings.Contains(err.Error(), "NUL byte") || !errors.As(err, &e) || len(e.Fixes) == 0 {
			t.Errorf("%+v: err = %v", cfg, err)
		}
	}
}

// TestInjectInitDirNotNested: an image whose /init is a directory and
// whose /usr/lib/docker2vm leads into it must get an error, not its /init
// nested in itself (a cycle, unreachable and silently lost).
func TestInjectInitDirNotNested(t *testing.T) {
	g, store := readGlueFrom(t, alpineBase())
	for _, link := range []string{"/init/d2v", "../../init", "/init"} {
		m := busyboxImage()
		m["init/run"] = "s6"
		m["usr/lib/docker2vm"] = "->" + link
		img := buildTree(t, store, m)
		_, err := Inject(img, g, ImageConfig{Cmd: []string{"sh"}}, nil)
		if err == nil || !strings.Contains(err.Error(), "inside /init itself") {
			t.Errorf("docker2vm -> %s: err = %v", link, err)
		}
	}
}
