package guest

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/docker2vm/docker2vm/fstree"
	"github.com/docker2vm/docker2vm/gondolin/guestenv/prebuilt"
	"github.com/docker2vm/docker2vm/hint"
)

// TestInjectHostFiles: /etc/hostname and /etc/hosts are written where the
// image's are absent or empty, and an image's own are kept.
func TestInjectHostFiles(t *testing.T) {
	for _, tc := range []struct {
		name         string
		files        map[string]spec
		hostname     string // ImageConfig.Hostname
		wantHostname string // "" when the image's is kept
		wantHosts    string // the name /etc/hosts must map; "" when kept
		kept         []string
	}{
		{name: "absent", hostname: "0123456789ab", wantHostname: "0123456789ab\n", wantHosts: "0123456789ab"},
		{name: "absent, no name given", wantHostname: DefaultHostname + "\n", wantHosts: DefaultHostname},
		{name: "empty files (as BuildKit leaves them)", hostname: "c0ffee",
			files:        map[string]spec{"etc/hostname": "0644:", "etc/hosts": "0644:"},
			wantHostname: "c0ffee\n", wantHosts: "c0ffee"},
		{name: "the image's hostname names the guest", hostname: "c0ffee",
			files:     map[string]spec{"etc/hostname": "0644:web1\nignored\n", "etc/hosts": "0644:"},
			wantHosts: "web1", kept: []string{"/etc/hostname"}},
		{name: "the image's hosts file", hostname: "c0ffee",
			files:        map[string]spec{"etc/hosts": "0644:10.0.0.1 db\n"},
			wantHostname: "c0ffee\n", kept: []string{"/etc/hosts"}},
		{name: "a symlink is kept", hostname: "c0ffee",
			files:        map[string]spec{"etc/hosts": "->/run/hosts"},
			wantHostname: "c0ffee\n", kept: []string{"/etc/hosts"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, store := readGlueFrom(t, alpineBase())
			m := busyboxImage()
			for p, s := range tc.files {
				m[p] = s
			}
			img := buildTree(t, store, m)
			inj, err := Inject(img, g, ImageConfig{Cmd: []string{"sh"}, Hostname: tc.hostname}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantHostname != "" {
				if got := fileText(t, img, "/etc/hostname"); got != tc.wantHostname {
					t.Errorf("/etc/hostname = %q, want %q", got, tc.wantHostname)
				}
				if !has(inj.Files, "/etc/hostname") {
					t.Errorf("Files lacks /etc/hostname: %v", inj.Files)
				}
			}
			if tc.wantHosts != "" {
				hosts := fileText(t, img, "/etc/hosts")
				for _, line := range []string{"127.0.0.1\tlocalhost\n", "::1\tlocalhost ip6-localhost ip6-loopback\n", "127.0.1.1\t" + tc.wantHosts + "\n"} {
					if !strings.Contains(hosts, line) {
						t.Errorf("/etc/hosts lacks %q:\n%s", line, hosts)
					}
				}
			}
			for _, k := range tc.kept {
				if !has(inj.Kept, k) || has(inj.Files, k) {
					t.Errorf("%s: kept %v, files %v", k, inj.Kept, inj.Files)
				}
			}
			if n, _ := img.Lookup("etc/hosts"); tc.files["etc/hosts"] == "->/run/hosts" && (n == nil || n.Type != fstree.TypeSymlink) {
				t.Errorf("/etc/hosts replaced: %+v", n)
			}
		})
	}
}

// TestInjectGuestenv: docker2vm-guestenv for the base's architecture is
// where Gondolin's init execs its agent, and the base's agent where
// docker2vm-guestenv execs it.
func TestInjectGuestenv(t *testing.T) {
	for _, arch := range prebuilt.Arches {
		t.Run(arch, func(t *testing.T) {
			g, store := readGlueFrom(t, alpineBase())
			g.Arch = arch
			img := buildTree(t, store, busyboxImage())
			inj, err := Inject(img, g, ImageConfig{Cmd: []string{"sh"}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := prebuilt.Binary(arch)
			if n, _ := img.Lookup(strings.TrimPrefix(SandboxdPath, "/")); n == nil || n.Mode != 0o755 || !bytes.Equal(fstree.Bytes(n.Content), want) {
				t.Fatalf("%s is not docker2vm-guestenv for %s", SandboxdPath, arch)
			}
			if got := fileText(t, img, AgentPath); got != "sandboxd-binary" {
				t.Fatalf("%s = %q, want the base's sandboxd", AgentPath, got)
			}
			for _, p := range []string{SandboxdPath, AgentPath} {
				if !has(inj.Files, p) {
					t.Errorf("Files lacks %s", p)
				}
			}
		})
	}
	// The image's own file at the agent's new path is refused.
	g, store := readGlueFrom(t, alpineBase())
	m := busyboxImage()
	m[strings.TrimPrefix(AgentPath, "/")] = "theirs"
	_, err := Inject(buildTree(t, store, m), g, ImageConfig{}, nil)
	var e *hint.Error
	if !errors.As(err, &e) || !strings.Contains(err.Error(), "already has "+AgentPath) {
		t.Fatalf("err = %v", err)
	}
}

// TestInjectNoSandboxfs: a base without sandboxfs gives a guest that says,
// in its notes, what it lacks and how to boot it.
func TestInjectNoSandboxfs(t *testing.T) {
	base := alpineBase()
	delete(base, "usr/bin/sandboxfs")
	g, store := readGlueFrom(t, base)
	inj, err := Inject(buildTree(t, store, busyboxImage()), g, ImageConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !has(inj.Notes, NoSandboxfsNote) || !strings.Contains(NoSandboxfsNote, "vfs: null") || !strings.Contains(NoSandboxfsNote, SandboxfsPath) {
		t.Fatalf("notes %q", inj.Notes)
	}
	// With sandboxfs, no such note.
	g, store = readGlueFrom(t, alpineBase())
	if inj, err = Inject(buildTree(t, store, busyboxImage()), g, ImageConfig{}, nil); err != nil || has(inj.Notes, NoSandboxfsNote) {
		t.Fatalf("notes %q, %v", inj.Notes, err)
	}
}
