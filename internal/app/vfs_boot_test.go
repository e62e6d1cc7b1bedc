package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker2vm/docker2vm/internal/testenv"
	"github.com/docker2vm/docker2vm/internal/testenv/gondolintest"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
)

// TestBootDefaultVFS boots converted guests the way Gondolin's users
// create VMs: with its filesystem on (VM.create without vfs: null), so that
// the guest's sandboxfs serves /data and Gondolin waits for it before every
// exec, and with a host directory mounted through its mounts option (at
// /workspace: Gondolin serves it as /data/workspace and its init
// bind-mounts that there),
// written on one side and read on the other; in every rootfs mode, for an
// image with a shell and one without, and on arm64 too.
func TestBootDefaultVFS(t *testing.T) {
	for _, tc := range []struct {
		arch, image string
		modes       []string
	}{
		{testenv.AMD64, "busybox", []string{"cow", "readonly", "memory"}},
		{testenv.AMD64, "shell-less", []string{"cow"}},
		{testenv.ARM64, "busybox", []string{"cow"}},
	} {
		t.Run(tc.arch+"/"+tc.image, func(t *testing.T) {
			reg, base := bootPrereqs(t, tc.arch)
			img := helloImage(t, tc.arch)
			if tc.image == "busybox" {
				img = imagetest.Busybox(t, gondolintest.BaseBusybox(t, base))
			}
			out := convertAssets(t, tc.arch, reg.Push(t, "vfs:"+tc.image, img, nil), base)
			for _, mode := range tc.modes {
				host := t.TempDir()
				if err := os.WriteFile(filepath.Join(host, "from-host"), []byte("written on the host\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				// Gondolin's init makes each mount point; a read-only root
				// must have it already (docker2vm adds /home, as /data).
				at := "/workspace"
				if mode == "readonly" {
					at = "/home"
				}
				res := gondolintest.Boot(t, out, gondolintest.BootOptions{RootfsMode: mode, VFS: true, Mounts: map[string]string{at: host}},
					// Only the tools Gondolin's init needs: all an image without
					// a shell gets from the base.
					[]string{"sh", "-c", `grep -c " /data fuse.sandboxfs " /proc/mounts && grep -c " $1 fuse.sandboxfs " /proc/mounts && cat /run/sandboxfs.ready`, "sh", at},
					[]string{"sh", "-c", `cd "$1" && cat from-host && echo "written in the guest" >from-guest && mkdir dir && ls`, "sh", at},
					[]string{"sh", "-c", `ls /data /etc/gondolin`},
				)
				expectOutput(t, res, 0, "1\n1\nok\n")
				expectOutput(t, res, 1, "written on the host\ndir\nfrom-guest\nfrom-host\n")
				expectOutput(t, res, 2, strings.TrimPrefix(at, "/")+"\n")
				if got, err := os.ReadFile(filepath.Join(host, "from-guest")); err != nil || string(got) != "written in the guest\n" {
					t.Errorf("%s: the guest's file on the host: %q, %v", mode, got, err)
				}
				if st, err := os.Stat(filepath.Join(host, "dir")); err != nil || !st.IsDir() {
					t.Errorf("%s: the guest's directory on the host: %v", mode, err)
				}
			}
		})
	}
}
