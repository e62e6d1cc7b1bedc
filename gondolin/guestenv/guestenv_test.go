package guestenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/docker2vm/docker2vm/internal/require"
)

// A guest's mountinfo after Gondolin's init, with a tmpfs over a tmpfs and
// a path with a space.
const guestMountinfo = `21 1 254:0 / / rw,relatime - ext4 /dev/vda rw
22 21 0:5 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
23 21 0:20 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw
24 21 0:6 / /dev rw,nosuid - devtmpfs devtmpfs rw,size=491872k,nr_inodes=122968,mode=755
25 24 0:21 / /dev/pts rw,relatime - devpts devpts rw,gid=5,mode=620,ptmxmode=000
26 21 0:22 / /run rw,relatime - tmpfs tmpfs rw
27 21 0:23 / /tmp rw,relatime - tmpfs tmpfs rw
28 21 0:24 / /root rw,relatime - tmpfs tmpfs rw,mode=700
29 21 0:25 / /var/tmp rw,relatime - tmpfs tmpfs rw
30 21 0:26 / /var/cache rw,relatime - tmpfs tmpfs rw
31 21 0:27 / /var/log rw,relatime - tmpfs tmpfs rw
32 21 0:28 / /data rw,nosuid,nodev,relatime shared:1 - fuse.sandboxfs sandboxfs rw,user_id=0,group_id=0
33 21 0:28 /etc/gondolin /etc/gondolin rw,nosuid,nodev,relatime shared:1 - fuse.sandboxfs sandboxfs rw
34 26 0:29 / /run/user rw,relatime - tmpfs tmpfs rw
35 24 0:30 / /dev/shm rw,relatime - tmpfs tmpfs rw
36 21 0:31 / /srv/with\040space rw,relatime - tmpfs tmpfs rw
`

func TestCovered(t *testing.T) {
	mounts, err := ParseMountinfo(strings.NewReader(guestMountinfo))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/root", "/run", "/srv/with space", "/tmp", "/var/cache", "/var/log", "/var/tmp"}
	if got := Covered(mounts, "/"); !slices.Equal(got, want) {
		t.Fatalf("Covered = %v, want %v", got, want)
	}
	// A root that is not a mount point covers nothing.
	if got := Covered(mounts, "/nowhere"); len(got) != 0 {
		t.Fatalf("Covered(/nowhere) = %v", got)
	}
	// A later mount on / (a new root) is the one in use.
	again := append(slices.Clone(mounts), Mount{ID: 40, Parent: 21, Point: "/", FSType: "ext4"}, Mount{ID: 41, Parent: 40, Point: "/tmp", FSType: "tmpfs"})
	if got := Covered(again, "/"); !slices.Equal(got, []string{"/tmp"}) {
		t.Fatalf("Covered over a new root = %v", got)
	}
	if !IsMountPoint(mounts, "/dev/shm") || IsMountPoint(mounts, "/dev/mqueue") {
		t.Fatal("IsMountPoint")
	}
}

func TestOverlayOptions(t *testing.T) {
	got := OverlayOptions("/a,b:c", `/d\e`, "/w")
	want := `lowerdir=/a\,b\:c,upperdir=/d\\e,workdir=/w`
	if got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestHostname(t *testing.T) {
	for in, want := range map[string]string{
		"web1\n":                "web1",
		"  web1  \nsecond\n":    "web1",
		"":                      "",
		"\n":                    "",
		"a b\n":                 "",
		strings.Repeat("x", 64): strings.Repeat("x", 64),
		strings.Repeat("x", 65): "",
		"a/b":                   "",
	} {
		if got := Hostname([]byte(in)); got != want {
			t.Errorf("Hostname(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestAgentEnvScript sources the rendered file with each shell and reads
// every value back.
func TestAgentEnvScript(t *testing.T) {
	env := []string{"HOME=/root", "PATH=/usr/bin:/bin", "Q=it's $x `y` \\ \"z\"\nnext line", "EMPTY=", "1BAD=x", "BAD-NAME=x", "NOEQUALS", "DUP=1", "DUP=2"}
	script := AgentEnvScript(env)
	dir := t.TempDir()
	p := filepath.Join(dir, "agent-env.sh")
	if err := os.WriteFile(p, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, sh := range []string{"dash", "busybox", "bash"} {
		path, ok := require.Look(sh)
		if !ok {
			require.Missing(t, "%s is not installed", sh)
			continue
		}
		args := []string{"-c", `. "$1"; printf '%s\n' "$d2v_agent_vars"; for v in $d2v_agent_vars; do eval "printf '%s=%s|' \"\$v\" \"\${d2v_agent_$v}\""; done`, "sh", p}
		if sh == "busybox" {
			args = append([]string{"sh"}, args...)
		}
		out, err := exec.Command(path, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", sh, err, out)
		}
		want := "DUP EMPTY HOME PATH Q\nDUP=2|EMPTY=|HOME=/root|PATH=/usr/bin:/bin|Q=it's $x `y` \\ \"z\"\nnext line|"
		if string(out) != want {
			t.Errorf("%s: got\n%s\nwant\n%s", sh, out, want)
		}
	}
}
