package gondolin

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzManifest feeds arbitrary bytes to the manifest parsers (a base
// bundle's, strict and lenient) and the registry document reader: they
// must fail cleanly, never panic, and what they accept must be usable.
func FuzzManifest(f *testing.F) {
	f.Add([]byte(`{"version":1,"buildId":"d32fb60c-d749-53ec-bc05-cc046ef99669","config":{"arch":"x86_64"},"assets":{"kernel":"vmlinuz-virt","initramfs":"initramfs.cpio.lz4","rootfs":"rootfs.ext4"},"checksums":{"kernel":"","initramfs":"","rootfs":""}}`))
	f.Add([]byte(`{"schema":1,"refs":{"a:1":{"x86_64":"d32fb60c-d749-53ec-bc05-cc046ef99669"}},"builds":{"d32fb60c-d749-53ec-bc05-cc046ef99669":{"url":"builds/x.tar.gz","sha256":"00","arch":"x86_64"}}}`))
	f.Add([]byte(`{"assets":{"kernel":"../../etc/passwd"}}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if m, err := parseManifest("manifest.json", data); err == nil {
			if _, err := importAssets(m); err == nil && NormalizeArch(m.Config.Arch) == "" {
				t.Fatalf("a manifest without a known arch was accepted: %q", m.Config.Arch)
			}
		}
		if m, err := parseBaseManifest(data); err == nil {
			for _, err := range m.Assets.check() {
				t.Fatalf("a base manifest with a bad asset name was accepted: %v", err)
			}
		}
		p := filepath.Join(t.TempDir(), RegistryDocument)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if r, err := readRegistryDocument(p); err == nil && (r.Schema != 1 || r.Refs == nil || r.Builds == nil) {
			t.Fatalf("registry document accepted as %+v", r)
		}
	})
}
