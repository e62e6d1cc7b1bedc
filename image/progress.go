package image

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker2vm/docker2vm/internal/term"
	"github.com/docker2vm/docker2vm/internal/units"
)

// progress reports blob downloads. On a terminal, every download in
// progress has a bar of its own, redrawn below the other output; elsewhere
// one line says when a download starts and one when it ends (downloads
// that run at once interleave their lines).
type progress struct {
	w   io.Writer
	tty bool
	mu  sync.Mutex

	bars  []*tracker // tty: downloads in progress, by order (then as they started)
	drawn int        // lines of bars on the screen below the output
	last  time.Time  // when the bars were last drawn
}

// newProgress reports on w: with bars when w is a terminal, unless plain.
func newProgress(w io.Writer, plain bool) *progress {
	if w == nil {
		return nil
	}
	return &progress{w: w, tty: !plain && term.IsTerminal(w)}
}

func (p *progress) printf(format string, args ...any) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearBars()
	fmt.Fprintf(p.w, format, args...)
	p.drawBars()
}

// clearBars removes the bars from the screen. Called with p.mu held.
func (p *progress) clearBars() {
	if p.drawn > 0 {
		fmt.Fprintf(p.w, "\x1b[%dA\r\x1b[J", p.drawn)
		p.drawn = 0
	}
}

// drawBars draws a line per download in progress. Called with p.mu held.
func (p *progress) drawBars() {
	if !p.tty {
		return
	}
	if len(p.bars) == 0 {
		return
	}
	var done, size int64
	var rate float64
	for _, r := range p.bars {
		fmt.Fprintln(p.w, r.line())
		done += r.n.Load()
		size += r.size
		rate += r.rate()
	}
	// The overall line: what the downloads in progress have left, and
	// when they will be done at their present rates.
	fmt.Fprintf(p.w, "%d downloading: %s / %s, %s/s%s\n", len(p.bars), units.Bytes(done), units.Bytes(size), units.Bytes(int64(rate)), eta(size-done, rate))
	p.drawn = len(p.bars) + 1
	p.last = time.Now()
}

// eta says when n bytes will be there at rate bytes a second ("" when it
// cannot tell).
func eta(n int64, rate float64) string {
	if rate <= 0 || n <= 0 {
		return ""
	}
	return fmt.Sprintf(", about %s left", (time.Duration(float64(n) / rate * float64(time.Second))).Round(time.Second))
}

// remove takes r's bar away. Called with p.mu held.
func (p *progress) remove(t *tracker) {
	for i, b := range p.bars {
		if b == t {
			p.bars = append(p.bars[:i], p.bars[i+1:]...)
			return
		}
	}
}

// wrap reports the download of a blob read through rc; on a terminal its
// bar goes among the others by order (a layer's index).
func (p *progress) wrap(rc io.ReadCloser, what string, size int64, order int) io.ReadCloser {
	if p == nil {
		return rc
	}
	return &progressReader{rc: rc, t: p.track(what, size, order)}
}

// track starts reporting the download of a blob whose bytes may arrive
// over several connections: add counts them, finish or abandon ends it.
// On a terminal its bar goes among the others by order (a layer's index).
// A nil progress tracks nothing.
func (p *progress) track(what string, size int64, order int) *tracker {
	if p == nil {
		return nil
	}
	t := &tracker{p: p, what: what, size: size, start: time.Now(), order: order}
	if p.tty {
		p.mu.Lock()
		p.clearBars()
		i := len(p.bars)
		for i > 0 && p.bars[i-1].order > order {
			i--
		}
		p.bars = slices.Insert(p.bars, i, t)
		p.drawBars()
		p.mu.Unlock()
	} else {
		p.printf("Downloading %s (%s)\n", what, units.Bytes(size))
	}
	return t
}

// tracker is one download's progress.
type tracker struct {
	p     *progress
	what  string
	size  int64
	n     atomic.Int64
	start time.Time
	order int
	done  bool // p.mu
}

// add counts n more bytes downloaded.
func (t *tracker) add(n int) {
	if t == nil || n <= 0 {
		return
	}
	t.n.Add(int64(n))
	p := t.p
	if p.tty {
		p.mu.Lock()
		if !t.done && time.Since(p.last) > 100*time.Millisecond {
			p.clearBars()
			p.drawBars()
		}
		p.mu.Unlock()
	}
}

// finish says the download is complete.
func (t *tracker) finish() {
	if t != nil {
		t.end(fmt.Sprintf("Downloaded %s (%s in %.1fs)\n", t.what, units.Bytes(t.n.Load()), time.Since(t.start).Seconds()))
	}
}

// abandon takes the download's bar away without a word: it failed or was
// stopped, which is reported elsewhere.
func (t *tracker) abandon() {
	if t != nil {
		t.end("")
	}
}

// end takes t's bar away (once) and prints msg.
func (t *tracker) end(msg string) {
	p := t.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if t.done {
		return
	}
	t.done = true
	p.clearBars()
	p.remove(t)
	fmt.Fprint(p.w, msg)
	p.drawBars()
}

// progressReader reports the download of a blob read through one reader.
type progressReader struct {
	rc io.ReadCloser
	t  *tracker
}

func (r *progressReader) Read(b []byte) (int, error) {
	n, err := r.rc.Read(b)
	r.t.add(n)
	if err == io.EOF {
		r.t.finish()
	}
	return n, err
}

func (r *progressReader) Close() error {
	r.t.abandon()
	return r.rc.Close()
}

// line is t's bar.
func (t *tracker) line() string {
	const width = 30
	n := t.n.Load()
	frac := 0.0
	if t.size > 0 {
		frac = float64(n) / float64(t.size)
		if frac > 1 {
			frac = 1
		}
	}
	fill := int(frac * width)
	name := t.what
	if len(name) > 40 {
		name = name[:40] + "…"
	}
	rate := t.rate()
	return fmt.Sprintf("%s [%s%s] %s / %s %s/s%s", name, strings.Repeat("=", fill), strings.Repeat(" ", width-fill),
		units.Bytes(n), units.Bytes(t.size), units.Bytes(int64(rate)), eta(t.size-n, rate))
}

// rate is t's average speed so far, in bytes a second.
func (t *tracker) rate() float64 {
	d := time.Since(t.start).Seconds()
	if d < 0.2 {
		return 0
	}
	return float64(t.n.Load()) / d
}
