package image

import (
	"bytes"
	"io"
	"strings"
	"sync"
	"testing"
)

// TestProgressBars: on a terminal every download in progress has a bar,
// in layer order whatever order they started in, redrawn below the other
// output; a finished one leaves one line.
func TestProgressBars(t *testing.T) {
	var out bytes.Buffer
	p := &progress{w: &out, tty: true}
	r2 := p.wrap(io.NopCloser(strings.NewReader("bbbb")), "layer 2/2", 4, 1)
	r1 := p.wrap(io.NopCloser(strings.NewReader("aa")), "layer 1/2", 2, 0)
	empty := "[" + strings.Repeat(" ", 30) + "]"
	if s := out.String(); !strings.HasSuffix(s, "\x1b[2A\r\x1b[Jlayer 1/2 "+empty+" 0 B / 2 B 0 B/s\nlayer 2/2 "+empty+" 0 B / 4 B 0 B/s\n2 downloading: 0 B / 6 B, 0 B/s\n") {
		t.Fatalf("bars not in layer order, or no overall line: %q", s)
	}
	p.printf("a message\n")
	if s := out.String(); !strings.Contains(s, "\x1b[3A\r\x1b[Ja message\nlayer 1/2") {
		t.Errorf("a message is not printed above the bars: %q", s)
	}
	io.Copy(io.Discard, r1)
	r1.Close()
	if s := out.String(); !strings.HasSuffix(s, "Downloaded layer 1/2 (2 B in 0.0s)\nlayer 2/2 "+empty+" 0 B / 4 B 0 B/s\n1 downloading: 0 B / 4 B, 0 B/s\n") {
		t.Errorf("a finished download does not leave its line above the others: %q", s)
	}
	r2.Close() // stopped before its end: its bar goes, and the overall line
	if s := out.String(); !strings.HasSuffix(s, "\x1b[2A\r\x1b[J") || len(p.bars) != 0 {
		t.Errorf("a stopped download's bar stays: %q", s)
	}
	if got := eta(30<<20, 10<<20); got != ", about 3s left" {
		t.Errorf("eta = %q", got)
	}

	// Elsewhere: a line when each starts and ends.
	out.Reset()
	p = &progress{w: &out}
	r := p.wrap(io.NopCloser(strings.NewReader("aa")), "layer 1/1", 2, 0)
	io.Copy(io.Discard, r)
	if s := out.String(); s != "Downloading layer 1/1 (2 B)\nDownloaded layer 1/1 (2 B in 0.0s)\n" {
		t.Errorf("lines %q", s)
	}
}

// TestProgressTracker: a download fed by several connections at once has
// one bar and ends once, with all its bytes counted; an abandoned one
// leaves no line.
func TestProgressTracker(t *testing.T) {
	for _, tty := range []bool{false, true} {
		var out bytes.Buffer
		p := &progress{w: &out, tty: tty}
		tr := p.track("layer 1/1", 8*1000, 0)
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 1000 {
					tr.add(1)
				}
			}()
		}
		wg.Wait()
		tr.finish()
		tr.finish()
		tr.abandon()
		if n := strings.Count(out.String(), "Downloaded layer 1/1 (7.8 KiB in "); n != 1 || len(p.bars) != 0 {
			t.Errorf("tty %v: %d end lines, %d bars left: %q", tty, n, len(p.bars), out.String())
		}
		out.Reset()
		p.track("layer 2/2", 10, 1).abandon()
		if strings.Contains(out.String(), "Downloaded") || len(p.bars) != 0 {
			t.Errorf("tty %v: an abandoned download: %q, %d bars", tty, out.String(), len(p.bars))
		}
	}
	var nilProgress *progress
	nilProgress.track("x", 1, 0).add(1) // no progress: nothing, no panic
}
