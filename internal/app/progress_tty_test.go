//go:build linux

package app

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/docker2vm/docker2vm/internal/faultproxy"
	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/term"
	"github.com/docker2vm/docker2vm/internal/term/termtest"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
	"github.com/docker2vm/docker2vm/internal/testenv/registrytest"
	"github.com/docker2vm/docker2vm/internal/testtar"
)

// TestProgressOnATerminal runs oci2gondolin on a pseudo-terminal of 80 and
// of 40 columns, pulling four layers through a registry link that pauses
// mid-blob (so the bars are drawn and redrawn), and replays what it wrote
// through a terminal emulator: the screen and the scrollback hold each
// "applied" and "Downloaded" line once, whole, and no bar or fragment of
// one is left behind.
func TestProgressOnATerminal(t *testing.T) {
	require.Integration(t, "starts a registry")
	require.Tool(t, registrytest.Binary)
	reg := registrytest.Start(t, registrytest.Options{})
	const nLayers = 4
	rng := rand.New(rand.NewPCG(1, 2))
	var layers []v1.Layer
	for i := range nLayers {
		content := make([]byte, 3<<20)
		for j := range content {
			content[j] = byte(rng.Uint32())
		}
		layers = append(layers, imagetest.NewLayer(t, testtar.Build(t, testtar.FileBytes(fmt.Sprintf("big%d", i), content)), imagetest.Gzip, true))
	}
	reg.Push(t, "layers:1", imagetest.New(t, imagetest.Spec{OCI: true, Layers: layers}), nil)
	proxy := faultproxy.Start(t, "http://"+reg.Host,
		faultproxy.Rule{Method: "GET", Path: "/blobs/", Action: faultproxy.Stall, After: 256 << 10, For: 350 * time.Millisecond},
		faultproxy.Rule{Method: "GET", Path: "/blobs/", Action: faultproxy.Stall, After: 1 << 20, For: 350 * time.Millisecond})

	for _, cols := range []int{80, 40} {
		t.Run(fmt.Sprint(cols), func(t *testing.T) {
			raw := runOnTerminal(t, cols, "--image", proxy.Host+"/layers:1", "--plain",
				"--out", filepath.Join(t.TempDir(), "out"), "--cache-dir", t.TempDir())
			if !bytes.Contains(raw, []byte("downloading:")) || !bytes.Contains(raw, []byte("\x1b[")) {
				t.Fatalf("no bars were drawn:\n%q", raw)
			}
			screen := termtest.New(cols, 24)
			screen.Write(raw)
			lines := screen.Lines()
			shown := strings.Join(lines, "\n")
			for i := 1; i <= nLayers; i++ {
				for _, re := range []string{
					fmt.Sprintf(`^applied layer %d/%d sha256:\S+ in \S+$`, i, nLayers),
					fmt.Sprintf(`^Downloaded layer %d/%d sha256:\S+ \(3\.0 MiB in \S+s\)$`, i, nLayers),
				} {
					if n := countMatches(lines, re); n != 1 {
						t.Errorf("%d lines match %s, want 1; the terminal shows:\n%s", n, re, shown)
					}
				}
				if n := countMatches(lines, fmt.Sprintf(`^layer %d/%d `, i, nLayers)); n > 1 {
					t.Errorf("layer %d's bar is shown %d times:\n%s", i, n, shown)
				}
			}
			for _, l := range lines {
				if strings.Contains(l, "downloading:") || strings.Contains(l, "B/s") || strings.HasPrefix(l, "layer ") {
					t.Errorf("a bar, or a piece of one, is left on the terminal: %q\nthe terminal shows:\n%s", l, shown)
				}
			}
			// Every bar drawn fits the terminal: none wraps.
			esc := regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]|\r`)
			bar := regexp.MustCompile(`^layer \d+/\d+ .* / |downloading:`)
			for _, l := range strings.Split(esc.ReplaceAllString(string(raw), ""), "\n") {
				if n := len([]rune(l)); bar.MatchString(l) && n >= cols {
					t.Errorf("a bar line of %d columns on a %d-column terminal: %q", n, cols, l)
				}
			}
		})
	}
}

// runOnTerminal runs oci2gondolin with args and its stderr on a
// pseudo-terminal of cols columns, and returns what it wrote there.
func runOnTerminal(t *testing.T, cols int, args ...string) []byte {
	t.Helper()
	master, slave, err := term.OpenPTY()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	if err := term.SetSize(master, cols, 24); err != nil {
		t.Fatal(err)
	}
	var raw bytes.Buffer
	done := make(chan struct{})
	go func() {
		io.Copy(&raw, master) // ends with EIO once the slave is closed
		close(done)
	}()
	var stdout bytes.Buffer
	code := OCI2Gondolin().Exec(context.Background(), args, &stdout, slave)
	slave.Close()
	<-done
	if code != 0 {
		t.Fatalf("exit %d; the terminal got:\n%s", code, raw.String())
	}
	return raw.Bytes()
}

func countMatches(lines []string, re string) int {
	r := regexp.MustCompile(re)
	n := 0
	for _, l := range lines {
		if r.MatchString(l) {
			n++
		}
	}
	return n
}
