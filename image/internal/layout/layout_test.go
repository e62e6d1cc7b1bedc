package layout

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/image/internal/blob"
)

// TestStore: a layout's blobs are served by digest and verified; what is
// missing or wrong is named with the layout it was looked for in.
func TestStore(t *testing.T) {
	dir := t.TempDir()
	manifest := []byte(`{"schemaVersion":2}`)
	good := blob.Sha256Of(manifest)
	tampered := blob.Sha256Of([]byte("another manifest"))
	os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755)
	os.WriteFile(filepath.Join(dir, "blobs", "sha256", good.Hex), manifest, 0o644)
	os.WriteFile(filepath.Join(dir, "blobs", "sha256", tampered.Hex), manifest, 0o644)
	st := &Store{FS: Dir(dir), Where: "OCI layout " + dir}
	ctx := context.Background()

	tests := []struct {
		name    string
		desc    v1.Descriptor
		wantErr string
		is      error
	}{
		{"verified", v1.Descriptor{Digest: good, Size: int64(len(manifest))}, "", nil},
		{"size unknown", v1.Descriptor{Digest: good}, "", nil},
		{"tampered", v1.Descriptor{Digest: tampered}, "digest mismatch", blob.ErrDigestMismatch},
		{"wrong size", v1.Descriptor{Digest: good, Size: 3}, "more than the 3 bytes", blob.ErrDigestMismatch},
		{"missing", v1.Descriptor{Digest: blob.Sha256Of(nil)}, "is missing from OCI layout " + dir, nil},
		{"algorithm", v1.Descriptor{Digest: v1.Hash{Algorithm: "sha512", Hex: strings.Repeat("a", 128)}}, "unsupported digest algorithm", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := st.Manifest(ctx, tc.desc, "manifest x")
			if tc.wantErr == "" {
				if err != nil || string(b) != string(manifest) {
					t.Fatalf("Manifest = %q, %v", b, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "manifest x") {
				t.Fatalf("err = %v, want one naming the manifest with %q", err, tc.wantErr)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("err = %v, not %v", err, tc.is)
			}
		})
	}
	if _, err := st.Index(); err == nil || !strings.Contains(err.Error(), "has no index.json") || len(hint.Of(err)) == 0 {
		t.Errorf("Index of a layout without index.json: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "index.json"), []byte(`{}`), 0o644)
	if b, err := st.Index(); err != nil || string(b) != `{}` {
		t.Errorf("Index = %q, %v", b, err)
	}
}
