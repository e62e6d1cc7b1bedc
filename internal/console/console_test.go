package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

// fake is a console on a buffer taken for a terminal of *width columns.
func fake(width *int) (*Console, *bytes.Buffer) {
	var out bytes.Buffer
	return &Console{s: &screen{w: &out, tty: true, width: func() int { return *width }}}, &out
}

// TestBars: every download in progress has a bar, in layer order whatever
// order they started in, redrawn below the other output; a finished one
// leaves one line; a stopped one leaves none.
func TestBars(t *testing.T) {
	width := 200
	c, out := fake(&width)
	d2 := c.Start("layer 2/2", 4, 1)
	d1 := c.Start("layer 1/2", 2, 0)
	empty := "[" + strings.Repeat(" ", 30) + "]"
	if s := out.String(); !strings.HasSuffix(s, "\x1b[2A\r\x1b[Jlayer 1/2 "+empty+" 0 B / 2 B 0 B/s\nlayer 2/2 "+empty+" 0 B / 4 B 0 B/s\n2 downloading: 0 B / 6 B, 0 B/s\n") {
		t.Fatalf("bars not in layer order, or no overall line: %q", s)
	}
	c.Printf("a message")
	if s := out.String(); !strings.Contains(s, "\x1b[3A\r\x1b[Ja message\nlayer 1/2") {
		t.Errorf("a message is not printed above the bars: %q", s)
	}
	d1.Add(2)
	d1.Finish()
	if s := out.String(); !strings.HasSuffix(s, "Downloaded layer 1/2 (2 B in 0.0s)\nlayer 2/2 "+empty+" 0 B / 4 B 0 B/s\n1 downloading: 0 B / 4 B, 0 B/s\n") {
		t.Errorf("a finished download does not leave its line above the others: %q", s)
	}
	d2.Abandon() // stopped before its end: its bar goes, and the overall line
	if s := out.String(); !strings.HasSuffix(s, "\x1b[2A\r\x1b[J") || len(c.s.bars) != 0 {
		t.Errorf("a stopped download's bar stays: %q", s)
	}
	if got := eta(30<<20, 10<<20); got != ", about 3s left" {
		t.Errorf("eta = %q", got)
	}

	// Elsewhere: a line when each starts and ends.
	var plain bytes.Buffer
	c = New(&plain, false)
	d := c.Start("layer 1/1", 2, 0)
	d.Add(2)
	d.Finish()
	if s := plain.String(); s != "Downloading layer 1/1 (2 B)\nDownloaded layer 1/1 (2 B in 0.0s)\n" {
		t.Errorf("lines %q", s)
	}
}

// TestWrite: lines written to a console, and to its prefixed views, are
// printed whole above the bars, each view's lines with its prefix; a
// line's start waits for its end.
func TestWrite(t *testing.T) {
	width := 80
	c, out := fake(&width)
	c.Start("layer 1/1", 10, 0)
	amd := c.With("[linux/amd64] ")
	amd.Write([]byte("applied layer 1/2"))
	if strings.Contains(out.String(), "applied") {
		t.Fatalf("half a line was printed: %q", out.String())
	}
	amd.Write([]byte(" in 1ms\nUsing cached layer 2/2\n"))
	want := "\x1b[2A\r\x1b[J[linux/amd64] applied layer 1/2 in 1ms\n[linux/amd64] Using cached layer 2/2\nlayer 1/1 "
	if s := out.String(); !strings.Contains(s, want) {
		t.Errorf("lines are not printed whole and prefixed above the bars:\n got %q\nwant %q", s, want)
	}
	out.Reset()
	d := Prefix(amd, "x ").(*Console).Start("layer 9/9", 1, 9)
	if s := out.String(); !strings.Contains(s, "\n[linux/amd64] x layer 9/9 [") {
		t.Errorf("a view's bar lacks its prefix: %q", s)
	}
	d.Finish()
	if s := out.String(); !strings.Contains(s, "J[linux/amd64] x Downloaded layer 9/9 (0 B in ") {
		t.Errorf("a view's download line does not start with its prefix: %q", s)
	}
	var plain bytes.Buffer
	Prefix(&plain, "[p] ").Write([]byte("one\ntwo\n"))
	if plain.String() != "[p] one\n[p] two\n" {
		t.Errorf("a prefixed plain writer: %q", plain.String())
	}
	if Prefix(nil, "x") != nil || Of(nil, false) != nil {
		t.Error("a nil writer gets a console")
	}
	var none *Console
	none.Start("x", 1, 0).Add(1) // no console: nothing, no panic
	none.Printf("x")
}

// TestFit: a bar line is never wider than the terminal less one column
// (so it never wraps); as the width shrinks the estimate goes first, then
// the rate, the bar narrows, the name is shortened, and the bar goes.
func TestFit(t *testing.T) {
	name := "[linux/arm64] layer 12/12 sha256:0123456789abcdef0123456789abcdef"
	amount, rate, est := " 12.3 MiB / 88.5 MiB", " 4.1 MiB/s", ", about 18s left"
	for _, tc := range []struct {
		width       int
		has, hasNot []string
	}{
		{200, []string{name, "[===", rate, est}, nil},
		{130, []string{name, "[===", rate}, []string{est}},
		{120, []string{name, "[===", amount}, []string{rate}},
		{100, []string{name, "[==        ]", amount}, []string{rate}},
		{80, []string{"[linux/arm64] layer 12/12 sha256", "…", "[==        ]", amount}, []string{rate}},
		{40, []string{"[linux/arm64] laye…", amount}, []string{"[="}},
		{20, []string{"[linux/arm64] l…"}, nil},
		{1, nil, nil},
	} {
		got := fitColumns(tc.width-1, name, 0.2, 30, amount, rate, est)
		if n := utf8.RuneCountInString(got); n > tc.width-1 {
			t.Errorf("width %d: %d columns: %q", tc.width, n, got)
		}
		for _, s := range tc.has {
			if !strings.Contains(got, s) {
				t.Errorf("width %d: %q lacks %q", tc.width, got, s)
			}
		}
		for _, s := range tc.hasNot {
			if strings.Contains(got, s) {
				t.Errorf("width %d: %q has %q", tc.width, got, s)
			}
		}
	}
}

// TestResize: each redraw fits the terminal's width at that moment, and
// after the terminal narrowed, the cursor goes up over every row the old
// bars wrapped onto.
func TestResize(t *testing.T) {
	width := 120
	c, out := fake(&width)
	c.Start("layer 1/1 sha256:0123456789abcdef0123456789abcdef0123456789abcdef", 100<<20, 0)
	wide, overall := c.s.drawn[0], c.s.drawn[1]
	if wide < 80 {
		t.Fatalf("a bar of %d columns on a 120-column terminal", wide)
	}
	width = 40
	out.Reset()
	c.Printf("hello")
	// The bar and the overall line, each as a 40-column terminal wraps it.
	rows := (wide+39)/40 + (overall+39)/40
	if want := fmt.Sprintf("\x1b[%dA\r\x1b[Jhello\n", rows); !strings.HasPrefix(out.String(), want) {
		t.Fatalf("after narrowing, the clear does not go up %d rows: %q", rows, out.String())
	}
	for _, line := range strings.Split(strings.TrimSuffix(out.String()[strings.Index(out.String(), "hello\n")+6:], "\n"), "\n") {
		if n := utf8.RuneCountInString(line); n > 39 {
			t.Errorf("after a resize to 40 columns a line of %d: %q", n, line)
		}
	}
}

// TestConcurrent: downloads fed by several goroutines at once end once,
// with all their bytes counted.
func TestConcurrent(t *testing.T) {
	for _, tty := range []bool{false, true} {
		var out bytes.Buffer
		width := 80
		c := &Console{s: &screen{w: &out, tty: tty, width: func() int { return width }}}
		d := c.Start("layer 1/1", 8*1000, 0)
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 1000 {
					d.Add(1)
					c.Printf("x")
				}
			}()
		}
		wg.Wait()
		d.Finish()
		d.Finish()
		d.Abandon()
		if n := strings.Count(out.String(), "Downloaded layer 1/1 (7.8 KiB in "); n != 1 || len(c.s.bars) != 0 {
			t.Errorf("tty %v: %d end lines, %d bars left", tty, n, len(c.s.bars))
		}
		if n := strings.Count(out.String(), "x\n"); n != 8000 {
			t.Errorf("tty %v: %d of 8000 lines", tty, n)
		}
		out.Reset()
		c.Start("layer 2/2", 10, 1).Abandon()
		if strings.Contains(out.String(), "Downloaded") || len(c.s.bars) != 0 {
			t.Errorf("tty %v: an abandoned download: %q, %d bars", tty, out.String(), len(c.s.bars))
		}
	}
}

// TestJSON: with --progress json every report is one JSON object per line:
// lines (of a platform's view with its scope, of a builder as "build"),
// and each download's start and end under one id.
func TestJSON(t *testing.T) {
	var out bytes.Buffer
	c := NewJSON(&out)
	amd := c.With("[linux/amd64] ")
	amd.Printf("applied layer 1/1 in 1ms")
	c.Kind("build").Write([]byte("#1 [internal] load build definition\n#2 DONE\n"))
	d := amd.Start("layer 1/1 sha256:ab", 10, 0)
	d.Add(4)
	d.Add(6)
	d.Finish()
	d.Abandon() // ended once
	c.Start("layer 2/2", 5, 1).Abandon()
	var got []Event
	for _, line := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		var e Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("not one JSON object per line: %q: %v", line, err)
		}
		got = append(got, e)
	}
	want := []Event{
		{Type: "log", Scope: "linux/amd64", Message: "applied layer 1/1 in 1ms"},
		{Type: "build", Message: "#1 [internal] load build definition"},
		{Type: "build", Message: "#2 DONE"},
		{Type: "download", Scope: "linux/amd64", ID: 1, What: "layer 1/1 sha256:ab", State: "start", Size: 10},
		{Type: "download", Scope: "linux/amd64", ID: 1, What: "layer 1/1 sha256:ab", State: "done", Bytes: 10, Size: 10},
		{Type: "download", ID: 2, What: "layer 2/2", State: "start", Size: 5},
		{Type: "download", ID: 2, What: "layer 2/2", State: "abandoned", Size: 5},
	}
	if len(got) != len(want) {
		t.Fatalf("%d events, want %d:\n%s", len(got), len(want), out.String())
	}
	for i := range want {
		if fmt.Sprint(got[i]) != fmt.Sprint(want[i]) {
			t.Errorf("event %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}
