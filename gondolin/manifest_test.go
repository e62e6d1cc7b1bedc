package gondolin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestUUIDv5KnownVector(t *testing.T) {
	dns := mustUUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8")
	if got, want := uuidV5(dns, "python.org"), "886313e1-3b8a-5372-9b90-0c9aee199e5d"; got != want {
		t.Fatalf("uuid5(DNS, python.org) = %s, want %s", got, want)
	}
}

func TestBuildID(t *testing.T) {
	c := Checksums{Kernel: strings.Repeat("a", 64), Initramfs: strings.Repeat("b", 64), Rootfs: strings.Repeat("c", 64)}
	name := "gondolin-asset-build\nkernel=" + c.Kernel + "\ninitramfs=" + c.Initramfs + "\nrootfs=" + c.Rootfs + "\narch=x86_64"
	if got, want := BuildID(c, "x86_64"), uuidV5(buildIDNamespace, name); got != want {
		t.Fatalf("BuildID = %s, want %s", got, want)
	}
	if !IsBuildID(BuildID(c, "x86_64")) {
		t.Fatal("BuildID is not UUID-shaped")
	}
	withKrun := c
	withKrun.KrunKernel = strings.Repeat("d", 64)
	nameK := "gondolin-asset-build\nkernel=" + c.Kernel + "\ninitramfs=" + c.Initramfs + "\nrootfs=" + c.Rootfs +
		"\nkrunKernel=" + withKrun.KrunKernel + "\narch=aarch64"
	if got, want := BuildID(withKrun, "aarch64"), uuidV5(buildIDNamespace, nameK); got != want {
		t.Fatalf("BuildID with krun = %s, want %s", got, want)
	}
	if BuildID(c, "") != uuidV5(buildIDNamespace, strings.Replace(name, "arch=x86_64", "arch=unknown", 1)) {
		t.Fatal("empty arch must hash as unknown")
	}
}

func TestNormalizeArch(t *testing.T) {
	for in, want := range map[string]string{
		"x86_64": "x86_64", "AMD64": "x86_64", "x64": "x86_64", "linux/amd64": "x86_64",
		"aarch64": "aarch64", "arm64": "aarch64", "linux/arm64/v8": "aarch64",
		"riscv64": "", "windows/amd64": "", "": "",
	} {
		if got := NormalizeArch(in); got != want {
			t.Errorf("NormalizeArch(%q) = %q, want %q", in, got, want)
		}
	}
}

func validManifestJSON() map[string]any {
	return map[string]any{
		"version": 1, "buildId": "d32fb60c-d749-53ec-bc05-cc046ef99669",
		"config":          map[string]any{"arch": "x86_64", "distro": "alpine", "runtimeDefaults": map[string]any{"rootfsMode": "cow"}},
		"runtimeDefaults": map[string]any{"rootfsMode": "cow"},
		"buildTime":       "2026-11-25T17:57:34.524Z",
		"assets":          map[string]any{"kernel": "vmlinuz-virt", "initramfs": "initramfs.cpio.lz4", "rootfs": "rootfs.ext4"},
		"checksums":       map[string]any{"kernel": strings.Repeat("0", 64), "initramfs": strings.Repeat("1", 64), "rootfs": strings.Repeat("2", 64)},
	}
}

func TestReadManifest(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(m map[string]any)
		raw     string
		wantErr string
	}{
		{name: "valid", mutate: func(map[string]any) {}},
		{name: "arch alias", mutate: func(m map[string]any) { m["config"].(map[string]any)["arch"] = "arm64" }},
		{name: "bad arch", mutate: func(m map[string]any) { m["config"].(map[string]any)["arch"] = "mips" }, wantErr: "config.arch"},
		{name: "no build id", mutate: func(m map[string]any) { delete(m, "buildId") }, wantErr: "buildId"},
		{name: "build id not uuid", mutate: func(m map[string]any) { m["buildId"] = "abc" }, wantErr: "buildId"},
		{name: "asset escapes", mutate: func(m map[string]any) { m["assets"].(map[string]any)["rootfs"] = "../rootfs.ext4" }, wantErr: "assets.rootfs"},
		{name: "asset absolute", mutate: func(m map[string]any) { m["assets"].(map[string]any)["kernel"] = "/boot/vmlinuz" }, wantErr: "assets.kernel"},
		{name: "asset dot", mutate: func(m map[string]any) { m["assets"].(map[string]any)["initramfs"] = "." }, wantErr: "assets.initramfs"},
		{name: "bad checksum", mutate: func(m map[string]any) { m["checksums"].(map[string]any)["kernel"] = "sha256:00" }, wantErr: "checksums.kernel"},
		{name: "bad mode", mutate: func(m map[string]any) { m["runtimeDefaults"].(map[string]any)["rootfsMode"] = "rw" }, wantErr: "rootfsMode"},
		{name: "version 2", mutate: func(m map[string]any) { m["version"] = 2 }, wantErr: "version"},
		{name: "not json", raw: "{", wantErr: "not valid JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), ManifestName)
			data := []byte(tc.raw)
			if tc.raw == "" {
				m := validManifestJSON()
				tc.mutate(m)
				data, _ = json.Marshal(m)
			}
			os.WriteFile(p, data, 0o644)
			m, err := ReadManifest(p)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if m.Assets.Rootfs != "rootfs.ext4" || m.Config.Distro != "alpine" {
					t.Fatalf("parsed %+v", m)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want mention of %q", err, tc.wantErr)
			}
		})
	}
}

// fakeKernel returns bytes that sniff as a kernel for arch.
func fakeKernel(arch string) []byte {
	b := make([]byte, 8192)
	if arch == ArchX86_64 {
		copy(b[0x202:], "HdrS")
	} else {
		copy(b[0x38:], "ARM\x64")
	}
	copy(b[4096:], arch)
	return b
}

// makeBaseDir writes a base asset directory; manifest is written unless nil.
func makeBaseDir(t *testing.T, dir, arch string, withManifest bool) {
	t.Helper()
	os.MkdirAll(dir, 0o755)
	files := map[string][]byte{KernelName: fakeKernel(arch), InitramfsName: []byte("initramfs-" + arch), RootfsName: []byte("rootfs-" + arch)}
	sums := map[string]string{}
	for n, d := range files {
		if err := os.WriteFile(filepath.Join(dir, n), d, 0o644); err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256(d)
		sums[n] = hex.EncodeToString(s[:])
	}
	if withManifest {
		c := Checksums{Kernel: sums[KernelName], Initramfs: sums[InitramfsName], Rootfs: sums[RootfsName]}
		m := &Manifest{Version: 1, BuildID: BuildID(c, arch), Config: ManifestConfig{Arch: arch, Distro: "alpine"},
			Assets: DefaultAssets(), Checksums: c, BuildTime: "2026-01-01T00:00:00.000Z"}
		if err := writeManifest(filepath.Join(dir, ManifestName), m); err != nil {
			t.Fatal(err)
		}
	}
}

func TestWriteAssets(t *testing.T) {
	ctx := context.Background()
	baseDir := filepath.Join(t.TempDir(), "base")
	makeBaseDir(t, baseDir, ArchX86_64, true)
	base, err := loadBase(baseDir, "test", ArchX86_64, "")
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	rootfs := filepath.Join(out, RootfsName)
	os.WriteFile(rootfs, []byte("our rootfs"), 0o644)
	bt := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.FixedZone("x", 3600))
	m, err := WriteAssets(ctx, out, base, rootfs, AssetOptions{RootfsMode: RootfsReadonly, BuildTime: bt,
		OCISource: &OCISource{Image: "alpine:3", Runtime: "docker2vm", Platform: "linux/amd64", Digest: "sha256:ab"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{KernelName, InitramfsName, RootfsName, ManifestName} {
		if _, err := os.Stat(filepath.Join(out, n)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := ReadManifest(filepath.Join(out, ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("our rootfs"))
	if got.Checksums.Rootfs != hex.EncodeToString(sum[:]) || got.Checksums.Kernel != base.Manifest.Checksums.Kernel {
		t.Fatalf("checksums %+v", got.Checksums)
	}
	if got.BuildID != BuildID(got.Checksums, "x86_64") || got.BuildID != m.BuildID {
		t.Fatalf("buildId %s", got.BuildID)
	}
	if got.BuildTime != "2024-05-06T06:08:09.123Z" {
		t.Fatalf("buildTime %s", got.BuildTime)
	}
	if got.RuntimeDefaults.RootfsMode != RootfsReadonly || got.Config.RuntimeDefaults.RootfsMode != RootfsReadonly {
		t.Fatal("rootfsMode not recorded")
	}
	if got.OCISource == nil || got.OCISource.Digest != "sha256:ab" {
		t.Fatal("ociSource lost")
	}
	// No temp files left behind.
	ents, _ := os.ReadDir(out)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("leftover %s", e.Name())
		}
	}
	// Deterministic: same inputs, same manifest.
	m2, err := WriteAssets(ctx, out, base, rootfs, AssetOptions{RootfsMode: RootfsReadonly, BuildTime: bt,
		OCISource: &OCISource{Image: "alpine:3", Runtime: "docker2vm", Platform: "linux/amd64", Digest: "sha256:ab"}})
	if err != nil || m2.BuildID != m.BuildID {
		t.Fatalf("rerun: %v %s", err, m2.BuildID)
	}
	if _, err := WriteAssets(ctx, out, base, rootfs, AssetOptions{RootfsMode: "rw"}); err == nil {
		t.Fatal("bad rootfs mode accepted")
	}
	// A rootfs outside dir is copied in.
	out2 := t.TempDir()
	m3, err := WriteAssets(ctx, out2, base, rootfs, AssetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if m3.Assets.Rootfs != RootfsName || m3.RuntimeDefaults.RootfsMode != RootfsCOW {
		t.Fatalf("%+v", m3)
	}
	if b, _ := os.ReadFile(filepath.Join(out2, RootfsName)); string(b) != "our rootfs" {
		t.Fatal("rootfs not copied")
	}
}

func TestKernelArch(t *testing.T) {
	if kernelArch(fakeKernel(ArchX86_64)) != ArchX86_64 || kernelArch(fakeKernel(ArchAarch64)) != ArchAarch64 {
		t.Fatal("bzImage/Image magic")
	}
	pe := make([]byte, 512)
	pe[0], pe[1] = 'M', 'Z'
	copy(pe[4:], "zimg")
	pe[0x3c] = 0x80
	copy(pe[0x80:], "PE\x00\x00\x64\xaa")
	if kernelArch(pe) != ArchAarch64 {
		t.Fatal("arm64 EFI zboot")
	}
	if kernelArch([]byte{0x1f, 0x8b, 8, 0}) != "" {
		t.Fatal("gzip should be unknown")
	}
}
