package blob

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestSniffCompression(t *testing.T) {
	for in, want := range map[string]string{"\x1f\x8b\x08\x00": "gzip", "\x28\xb5\x2f\xfd": "zstd", "etc/": "none", "": "none"} {
		if got := SniffCompression([]byte(in)); got != want {
			t.Errorf("SniffCompression(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestVerifier(t *testing.T) {
	data := []byte("hello, world")
	good := Sha256Of(data)
	tests := []struct {
		name    string
		data    []byte
		size    int64
		wantErr string
	}{
		{"ok", data, int64(len(data)), ""},
		{"ok unknown size", data, -1, ""},
		{"flipped", []byte("hello, wOrld"), int64(len(data)), "digest mismatch: got sha256:"},
		{"short", data[:5], int64(len(data)), "5 bytes, expected 12"},
		{"long", append(append([]byte{}, data...), '!'), int64(len(data)), "more than the 12 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := NewVerifier(bytes.NewReader(tc.data), good, tc.size, "layer 0 "+good.String(), false)
			if err != nil {
				t.Fatal(err)
			}
			_, err = io.ReadAll(iotest.OneByteReader(v))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "layer 0 "+good.String()) || !errors.Is(err, ErrDigestMismatch) {
				t.Fatalf("err = %v, want one naming the layer with %q", err, tc.wantErr)
			}
		})
	}
}
