package app

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/docker2vm/docker2vm/internal/cli"
)

// parseOCIFlags parses args as oci2gondolin's flags.
func parseOCIFlags(t *testing.T, args ...string) *ociFlags {
	t.Helper()
	var o ociFlags
	if err := cli.Parse(args, o.flags()); err != nil {
		t.Fatal(err)
	}
	return &o
}

// TestImageFlags: --stall-timeout and --max-layers reach the image options.
func TestImageFlags(t *testing.T) {
	tests := []struct {
		args    []string
		stall   time.Duration
		layers  int
		wantErr string
	}{
		{nil, 0, 0, ""},
		{[]string{"--stall-timeout", "90s", "--max-layers", "200"}, 90 * time.Second, 200, ""},
		{[]string{"--stall-timeout", "5m"}, 5 * time.Minute, 0, ""},
		{[]string{"--stall-timeout", "90"}, 0, 0, `Invalid duration for --stall-timeout: "90".`},
		{[]string{"--stall-timeout", "0s"}, 0, 0, `Invalid duration for --stall-timeout: "0s".`},
		{[]string{"--max-layers", "many"}, 0, 0, `Invalid number for --max-layers: "many".`},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			o := parseOCIFlags(t, append([]string{"--out", t.TempDir()}, tc.args...)...)
			opts, err := o.baseOptions("oci2gondolin", io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if opts.Image.StallTimeout != tc.stall || opts.Image.MaxLayers != tc.layers {
				t.Errorf("StallTimeout %s, MaxLayers %d; want %s, %d", opts.Image.StallTimeout, opts.Image.MaxLayers, tc.stall, tc.layers)
			}
		})
	}
}
