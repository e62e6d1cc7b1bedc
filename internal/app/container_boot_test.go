package app

import (
	"runtime"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/docker2vm/docker2vm/internal/testenv/gondolintest"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
	"github.com/docker2vm/docker2vm/internal/testtar"
)

// The guest gives the image's processes what runc and Docker give a
// container (docs/gondolin-contract.md, "What docker2vm adds"): these
// tests boot a busybox image with files where Gondolin's init mounts tmpfs
// and check each item, under Gondolin's own init scripts.

// containerEnvImage is imagetest.Busybox with an extra layer: files under every
// directory Gondolin's init covers with a tmpfs, owned by a user, and the
// empty /etc/hosts BuildKit leaves.
func containerEnvImage(t *testing.T, base string) v1.Image {
	t.Helper()
	img := imagetest.Busybox(t, gondolintest.BaseBusybox(t, base))
	layer := testtar.Build(t,
		testtar.Dir("var/"), testtar.Dir("var/log/"), testtar.Dir("var/log/app/").Owner(1000, 1000),
		testtar.File("var/log/app/app.log", "from the image\n").Owner(1000, 1000),
		testtar.Dir("var/cache/"), testtar.Dir("var/cache/app/"), testtar.File("var/cache/app/data", "cached\n"),
		testtar.Dir("var/tmp/"), testtar.File("var/tmp/seed", "vartmp\n"),
		testtar.Dir("tmp/").Mode(0o1777), testtar.File("tmp/seed", "tmp\n"),
		testtar.Dir("root/").Mode(0o700), testtar.File("root/.profile", "profile\n"),
		testtar.Dir("run/"), testtar.Dir("run/app/").Owner(1000, 1000).Mode(0o750),
		testtar.File("etc/hosts", ""),
	)
	return imagetest.WithLayer(t, img, imagetest.NewLayer(t, layer, imagetest.Gzip, true))
}

// containerChecks are the commands every rootfs mode must pass, with what
// their output must hold.
var containerChecks = []struct {
	argv []string
	want string
}{
	// Loopback up, localhost resolving, a server answering on both.
	{[]string{"sh", "-c", "busybox httpd -p 127.0.0.1:8080 -h /srv && busybox wget -qO- http://127.0.0.1:8080/app.sh | head -1 && busybox wget -qO- http://localhost:8080/app.sh | head -1"},
		"#!/bin/sh\n#!/bin/sh\n"},
	// The image's files over Gondolin's tmpfs, writable, Gondolin's own
	// files there too.
	{[]string{"sh", "-c", "cat /var/log/app/app.log /var/cache/app/data /var/tmp/seed /tmp/seed /root/.profile && echo appended >>/var/log/app/app.log && tail -1 /var/log/app/app.log && stat -c '%u %a' /run/app /root && ls /run/sandboxfs.ready /run/sandboxfs.failed 2>/dev/null | wc -l && ls -d /tmp/.cache"},
		"from the image\ncached\nvartmp\ntmp\nprofile\nappended\n1000 750\n0 700\n1\n/tmp/.cache\n"},
}

// TestBootContainerEnvironment checks each thing docker2vm-guestenv and
// the conversion add, in a cow guest, and that the loopback and the
// image's covered files work in every rootfs mode.
func TestBootContainerEnvironment(t *testing.T) {
	forEachArch(t, testBootContainerEnvironment)
}

func testBootContainerEnvironment(t *testing.T, arch string) {
	reg, base := bootPrereqs(t, arch)
	img := containerEnvImage(t, base)
	cfgDigest, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	hostname := cfgDigest.Hex[:12]
	ref := reg.Push(t, "busybox:container-env", img, nil)
	out := convertAssets(t, arch, ref, base)

	specs := []gondolintest.ExecSpec{
		{Argv: []string{"sh", "-c", "cat /proc/sys/kernel/hostname /etc/hostname && grep -E '^(127.0.0.1|::1|127.0.1.1)\t' /etc/hosts"}},
		{Argv: []string{"sh", "-c", "for l in fd stdin stdout stderr core; do readlink /dev/$l; done && echo to-stdout >/dev/stdout && echo to-stderr >/dev/stderr"}},
		{Argv: []string{"sh", "-c", "grep -E ' /dev/(shm|mqueue) ' /proc/mounts | cut -d' ' -f2,3,4 | cut -d, -f1-3 && stat -c %a /dev/shm"}},
		{Argv: []string{"sh", "-c", "ulimit -n && ulimit -Hn"}},
		// The caller's variable wins over the image's ENV.
		{Argv: []string{"/usr/bin/docker2vm-entrypoint"}, Env: []string{"GREETING=from the caller"}},
	}
	for _, c := range containerChecks {
		specs = append(specs, gondolintest.ExecSpec{Argv: c.argv})
	}
	rep, err := gondolintest.Run(t, out, gondolintest.BootOptions{}, specs...)
	if err != nil {
		t.Fatalf("boot: %v\n%s", err, rep.Log)
	}
	res := rep.Results
	expectOutput(t, res, 0, hostname+"\n"+hostname+"\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t"+hostname+"\n")
	expectOutput(t, res, 1, "/proc/self/fd\n/proc/self/fd/0\n/proc/self/fd/1\n/proc/self/fd/2\n/proc/kcore\nto-stdout\n")
	if len(res) > 1 && res[1].Stderr != "to-stderr\n" {
		t.Errorf("/dev/stderr: stderr %q", res[1].Stderr)
	}
	expectOutput(t, res, 2, "/dev/shm tmpfs rw,nosuid,nodev\n/dev/mqueue mqueue rw,nosuid,nodev\n1777\n")
	expectOutput(t, res, 3, "1048576\n1048576\n")
	expectOutput(t, res, 4, "app says from the caller from /srv as 0 with default-arg")
	for i, c := range containerChecks {
		expectOutput(t, res, 5+i, c.want)
	}
	if t.Failed() {
		t.Logf("the guest's console:\n%s", rep.Log)
	}
	// On a guest of the host's architecture the console is Gondolin's log.
	if arch == runtime.GOARCH {
		i := strings.Index(rep.Log, "docker2vm-guestenv: the guest is ready")
		if i < 0 {
			t.Errorf("the console does not show docker2vm-guestenv starting the agent")
		} else {
			line, _, _ := strings.Cut(rep.Log[i:], "\n")
			t.Log(line) // what it cost at boot (BENCHMARKS.md)
		}
	}

	// The loopback and the image's covered files in the other modes.
	for _, mode := range []string{"readonly", "memory"} {
		specs := make([]gondolintest.ExecSpec, len(containerChecks))
		for i, c := range containerChecks {
			specs[i] = gondolintest.ExecSpec{Argv: c.argv}
		}
		rep, err := gondolintest.Run(t, out, gondolintest.BootOptions{RootfsMode: mode}, specs...)
		if err != nil {
			t.Fatalf("%s boot: %v\n%s", mode, err, rep.Log)
		}
		for i, c := range containerChecks {
			expectOutput(t, rep.Results, i, c.want)
		}
	}
}
