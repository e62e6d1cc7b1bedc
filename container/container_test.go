package container

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/docker2vm/docker2vm/convert"
	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/testenv/buildkittest"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
	"github.com/docker2vm/docker2vm/internal/testenv/registrytest"
)

// TestImageConvertsUnprivileged builds the container image with BuildKit
// as `make image` does (both architectures, one OCI archive), checks what
// it declares, and runs it under runc as its non-root user with no
// capabilities and no new privileges (an unprivileged pod's rights, less
// Docker's default capabilities), converting an image from a loopback
// registry into a mounted directory, as a conversion farm's Job does.
func TestImageConvertsUnprivileged(t *testing.T) {
	require.Integration(t, "runs buildkitd and runc")
	tools := require.Tools(t, "runc", "runc")
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	bk := buildkittest.Start(t, buildkittest.Options{})
	bk.PutOnPath(t)
	archive := filepath.Join(t.TempDir(), "docker2vm.oci.tar")
	cmd := exec.Command("sh", "scripts/image.sh")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "BUILDER=buildctl", "BUILDCTL_FLAGS=--addr "+bk.Addr, "IMAGE_OUT="+archive)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/image.sh: %v\n%s", err, out)
	}

	// Both architectures, each declaring its user and environment.
	dir := t.TempDir()
	if out, err := exec.Command("tar", "-xf", archive, "-C", dir).CombinedOutput(); err != nil {
		t.Fatalf("tar -xf: %v\n%s", err, out)
	}
	img := platformImage(t, dir, runtime.GOARCH)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != "65532:65532" || cf.Config.WorkingDir != "/work" || !slices.Contains(cf.Config.Env, "XDG_CACHE_HOME=/cache") ||
		cf.Config.Labels["org.opencontainers.image.title"] != "docker2vm" {
		t.Errorf("image config: %+v", cf.Config)
	}

	// Its root file system, as a runtime unpacks it.
	bundle := t.TempDir()
	rootfs := filepath.Join(bundle, "rootfs")
	unpack(t, img, rootfs)
	for _, f := range []string{"usr/local/bin/oci2gondolin", "usr/local/bin/dockerfile2gondolin", "usr/local/bin/docker2vm", "etc/ssl/certs/ca-certificates.crt", "etc/passwd"} {
		if _, err := os.Stat(filepath.Join(rootfs, f)); err != nil {
			t.Errorf("the image lacks /%s", f)
		}
	}
	for _, d := range []string{"tmp", "cache", "work", "home/docker2vm"} {
		fi, err := os.Stat(filepath.Join(rootfs, d))
		if err != nil || fi.Mode().Perm() != 0o775 || fi.Sys().(*syscall.Stat_t).Uid != 65532 || fi.Sys().(*syscall.Stat_t).Gid != 0 {
			t.Errorf("/%s: %v, %v; want the user's and group 0's (drwxrwxr-x 65532:0)", d, fi, err)
		}
	}

	// Run it: the user's uid, no capabilities, the host's network (to
	// reach the loopback registry), a directory of the host at /work.
	reg := registrytest.Start(t, registrytest.Options{})
	ref := reg.Push(t, "app:1", imagetest.New(t, imagetest.Spec{OCI: true}), nil)
	work := t.TempDir()
	if err := os.Chown(work, 65532, 65532); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(tools["runc"], "spec", "--bundle", bundle).CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v\n%s", err, out)
	}
	spec := readSpec(t, bundle)
	p := spec["process"].(map[string]any)
	p["terminal"] = false
	p["user"] = map[string]any{"uid": 65532, "gid": 65532}
	p["args"] = []string{"oci2gondolin", "--image", ref, "--platform", "linux/" + runtime.GOARCH, "--plain", "--out", "/work/out", "--progress", "plain"}
	p["env"] = cf.Config.Env
	p["cwd"] = cf.Config.WorkingDir
	p["capabilities"] = map[string]any{"bounding": []string{}, "effective": []string{}, "permitted": []string{}, "ambient": []string{}}
	p["noNewPrivileges"] = true
	linux := spec["linux"].(map[string]any)
	var ns []any
	for _, n := range linux["namespaces"].([]any) {
		if n.(map[string]any)["type"] != "network" {
			ns = append(ns, n)
		}
	}
	linux["namespaces"] = ns
	spec["root"] = map[string]any{"path": "rootfs", "readonly": false}
	spec["mounts"] = append(spec["mounts"].([]any), map[string]any{"destination": "/work", "type": "bind", "source": work, "options": []string{"rbind", "rw"}})
	writeSpec(t, bundle, spec)
	var stdout, stderr bytes.Buffer
	run := exec.Command(tools["runc"], "--root", t.TempDir(), "run", "--bundle", bundle, fmt.Sprintf("d2v-image-%d", os.Getpid()))
	run.Stdout, run.Stderr = &stdout, &stderr
	if err := run.Run(); err != nil {
		t.Fatalf("runc run: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	t.Logf("oci2gondolin in the container:\n%s", stderr.String())
	var res convert.Result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("stdout is not the JSON result: %v\n%s", err, stdout.String())
	}
	fi, err := os.Stat(filepath.Join(work, "out", "rootfs.ext4"))
	if err != nil || res.RootfsPath != "/work/out/rootfs.ext4" {
		t.Fatalf("no rootfs.ext4 in the mounted directory: %v (result %+v)", err, res)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65532 {
		t.Errorf("rootfs.ext4 is owned by uid %d: the conversion did not run as the image's user", st.Uid)
	}
	// The cache went where the image says, inside the container.
	if _, err := os.Stat(filepath.Join(rootfs, "cache", "docker2vm")); err != nil {
		t.Errorf("no cache in /cache: %v", err)
	}
}

// platformImage is the image for linux/arch in the OCI layout dir, whose
// index holds the multi-platform index BuildKit wrote; it checks that both
// architectures are there.
func platformImage(t *testing.T, dir, arch string) v1.Image {
	t.Helper()
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil || len(m.Manifests) != 1 {
		t.Fatalf("index.json: %v, %+v", err, m)
	}
	inner, err := idx.ImageIndex(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := inner.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	var img v1.Image
	for _, d := range im.Manifests {
		if d.Platform == nil || d.Platform.OS != "linux" {
			continue
		}
		found = append(found, d.Platform.Architecture)
		if d.Platform.Architecture == arch {
			if img, err = inner.Image(d.Digest); err != nil {
				t.Fatal(err)
			}
		}
	}
	slices.Sort(found)
	if !slices.Equal(found, []string{"amd64", "arm64"}) || img == nil {
		t.Fatalf("the image is for %v, want amd64 and arm64", found)
	}
	return img
}

// unpack writes img's layers into dir, in order (an image from scratch:
// no whiteouts).
func unpack(t *testing.T, img v1.Image, dir string) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			name := filepath.Clean(h.Name)
			if strings.HasPrefix(name, "..") || strings.Contains(filepath.Base(name), ".wh.") {
				t.Fatalf("unexpected entry %s", h.Name)
			}
			p := filepath.Join(dir, name)
			switch h.Typeflag {
			case tar.TypeDir:
				if err := os.MkdirAll(p, 0o755); err != nil {
					t.Fatal(err)
				}
			case tar.TypeReg:
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := io.Copy(f, tr); err != nil {
					t.Fatal(err)
				}
				f.Close()
			default:
				t.Fatalf("unexpected entry %s of type %c", h.Name, h.Typeflag)
			}
			if err := os.Lchown(p, h.Uid, h.Gid); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, h.FileInfo().Mode()&(os.ModePerm|os.ModeSticky|os.ModeSetuid|os.ModeSetgid)); err != nil {
				t.Fatal(err)
			}
		}
		rc.Close()
	}
}

func readSpec(t *testing.T, bundle string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var spec map[string]any
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	return spec
}

func writeSpec(t *testing.T, bundle string, spec map[string]any) {
	t.Helper()
	b, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}
