package testenv

import (
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/docker2vm/docker2vm/ext4"
	"github.com/docker2vm/docker2vm/internal/testtar"
)

// WithConfig returns img with its runtime config edited.
func WithConfig(t TB, img v1.Image, edit func(*v1.Config)) v1.Image {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	edit(&cf.Config)
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// WithLayer returns img with layer added on top.
func WithLayer(t TB, img v1.Image, layer v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(img, layer)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// OpenExt4 opens an ext4 image with docker2vm's own reader; the file is
// closed when the test ends.
func OpenExt4(t TB, path string) *ext4.FS {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	fs, err := ext4.Open(f, st.Size())
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return fs
}

// BusyboxImage is a two-layer image: busybox with its applets and an
// /etc/passwd, then an app directory; with ENV, WORKDIR, ENTRYPOINT and CMD
// so the guest's docker2vm-entrypoint has something to honour. Its
// platform is linux/<the busybox binary's architecture> (BaseBusybox of an
// arm64 base makes a linux/arm64 image).
func BusyboxImage(t TB, busybox []byte) v1.Image {
	t.Helper()
	arch := ArchOfELF(busybox)
	if arch == "" {
		t.Fatal("BusyboxImage: busybox is not an amd64 or arm64 ELF binary")
	}
	entries := []testtar.Entry{
		testtar.Dir("bin/"),
		testtar.FileBytes("bin/busybox", busybox).Mode(0o755),
	}
	for _, a := range []string{"sh", "ls", "cat", "echo", "id", "mkdir", "mount", "pwd", "touch", "rm", "env", "grep", "stat", "uname", "df", "head"} {
		entries = append(entries, testtar.Symlink("bin/"+a, "busybox"))
	}
	entries = append(entries,
		testtar.Dir("etc/"),
		testtar.File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
		testtar.File("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
		testtar.File("etc/os-release", "NAME=\"docker2vm sample\"\nID=busybox\n"))
	app := []testtar.Entry{
		testtar.Dir("srv/"),
		testtar.File("srv/app.sh", "#!/bin/sh\necho \"app says $GREETING from $(pwd) as $(id -u) with $*\"\n").Mode(0o755),
	}
	img := NewImage(t, ImageSpec{OCI: true, Platform: v1.Platform{OS: "linux", Architecture: arch},
		Env:    []string{"PATH=/usr/local/bin:/usr/bin:/bin", "GREETING=hello busybox"},
		Layers: []v1.Layer{NewLayer(t, testtar.Build(t, entries...), Gzip, true), NewLayer(t, testtar.Build(t, app...), Zstd, true)}})
	return WithConfig(t, img, func(c *v1.Config) {
		c.WorkingDir = "/srv"
		c.Entrypoint = []string{"/srv/app.sh"}
		c.Cmd = []string{"default-arg"}
	})
}
