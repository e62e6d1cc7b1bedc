package image

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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

	bars  []*progressReader // tty: downloads in progress, by order (then as they started)
	drawn int               // lines of bars on the screen below the output
	last  time.Time         // when the bars were last drawn
}

func newProgress(w io.Writer) *progress {
	if w == nil {
		return nil
	}
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
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
	for _, r := range p.bars {
		fmt.Fprintln(p.w, r.line())
	}
	p.drawn = len(p.bars)
	p.last = time.Now()
}

// remove takes r's bar away. Called with p.mu held.
func (p *progress) remove(r *progressReader) {
	for i, b := range p.bars {
		if b == r {
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
	r := &progressReader{rc: rc, p: p, what: what, size: size, start: time.Now(), order: order}
	if p.tty {
		p.mu.Lock()
		p.clearBars()
		i := len(p.bars)
		for i > 0 && p.bars[i-1].order > order {
			i--
		}
		p.bars = slices.Insert(p.bars, i, r)
		p.drawBars()
		p.mu.Unlock()
	} else {
		p.printf("Downloading %s (%s)\n", what, units.Bytes(size))
	}
	return r
}

type progressReader struct {
	rc    io.ReadCloser
	p     *progress
	what  string
	size  int64
	n     atomic.Int64
	start time.Time
	order int
	done  bool
}

func (r *progressReader) Read(b []byte) (int, error) {
	n, err := r.rc.Read(b)
	r.n.Add(int64(n))
	p := r.p
	if p.tty && !r.done && n > 0 {
		p.mu.Lock()
		if time.Since(p.last) > 100*time.Millisecond {
			p.clearBars()
			p.drawBars()
		}
		p.mu.Unlock()
	}
	if err == io.EOF && !r.done {
		r.done = true
		msg := fmt.Sprintf("Downloaded %s (%s in %.1fs)\n", r.what, units.Bytes(r.n.Load()), time.Since(r.start).Seconds())
		if p.tty {
			p.mu.Lock()
			p.clearBars()
			p.remove(r)
			fmt.Fprint(p.w, msg)
			p.drawBars()
			p.mu.Unlock()
		} else {
			p.printf("%s", msg)
		}
	}
	return n, err
}

// line is r's bar.
func (r *progressReader) line() string {
	const width = 30
	n := r.n.Load()
	frac := 0.0
	if r.size > 0 {
		frac = float64(n) / float64(r.size)
		if frac > 1 {
			frac = 1
		}
	}
	fill := int(frac * width)
	name := r.what
	if len(name) > 40 {
		name = name[:40] + "…"
	}
	return fmt.Sprintf("%s [%s%s] %s / %s", name, strings.Repeat("=", fill), strings.Repeat(" ", width-fill), units.Bytes(n), units.Bytes(r.size))
}

func (r *progressReader) Close() error {
	if r.p.tty && !r.done {
		r.done = true
		r.p.mu.Lock()
		r.p.clearBars()
		r.p.remove(r)
		r.p.drawBars()
		r.p.mu.Unlock()
	}
	return r.rc.Close()
}
