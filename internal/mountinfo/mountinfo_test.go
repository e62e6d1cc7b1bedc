package mountinfo

import (
	"slices"
	"strings"
	"testing"
)

// A guest's mountinfo after Gondolin's init, with a tmpfs over a tmpfs and
// a path with a space.
const guestMountinfo = `21 1 254:0 / / rw,relatime - ext4 /dev/vda rw
22 21 0:5 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
26 21 0:22 / /run rw,relatime - tmpfs tmpfs rw
32 21 0:28 / /data rw,nosuid,nodev,relatime shared:1 - fuse.sandboxfs sandboxfs rw,user_id=0,group_id=0
34 26 0:29 / /run/user rw,relatime - tmpfs tmpfs rw
36 21 0:31 / /srv/with\040space rw,relatime - tmpfs tmpfs rw
`

func TestParse(t *testing.T) {
	mounts, err := Parse(strings.NewReader(guestMountinfo))
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) != 6 {
		t.Fatalf("%d mounts", len(mounts))
	}
	if m := mounts[3]; m != (Mount{ID: 32, Parent: 21, Point: "/data", FSType: "fuse.sandboxfs"}) {
		t.Fatalf("mount 32 = %+v", m)
	}
	if got := mounts[5].Point; got != "/srv/with space" {
		t.Fatalf("escaped point = %q", got)
	}
	for _, bad := range []string{
		"21 1 254:0 / / rw - \n",
		"x 1 254:0 / / rw - ext4 /dev/vda rw\n",
		"21 1 254:0 / / rw ext4 /dev/vda rw\n",
		"21 1\n",
	} {
		if _, err := Parse(strings.NewReader(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	if got := Under(mounts, "/run"); !slices.Equal(got, []string{"/run/user", "/run"}) {
		t.Errorf("Under(/run) = %v", got)
	}
	for in, want := range map[string]string{`/a\040b\\x`: `/a b\\x`, `/a\134b`: `/a\b`, `/a\9`: `/a\9`, `/x\`: `/x\`} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(guestMountinfo)
	f.Add("21 1 254:0 / /a\\134b rw - ext4 x rw\n")
	f.Fuzz(func(t *testing.T, s string) {
		mounts, err := Parse(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, p := range Under(mounts, "/") {
			if !strings.HasPrefix(p, "/") {
				t.Fatalf("Under(/) gave %q", p)
			}
		}
	})
}
