package image

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/docker2vm/docker2vm/internal/units"
)

// progress reports blob downloads: a redrawn bar on a terminal, one line at
// the start and one at the end otherwise.
type progress struct {
	w   io.Writer
	tty bool
	mu  sync.Mutex
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
	fmt.Fprintf(p.w, format, args...)
}

// wrap reports the download of a blob read through rc.
func (p *progress) wrap(rc io.ReadCloser, what string, size int64) io.ReadCloser {
	if p == nil {
		return rc
	}
	if !p.tty {
		p.printf("Downloading %s (%s)\n", what, units.Bytes(size))
	}
	return &progressReader{rc: rc, p: p, what: what, size: size, start: time.Now()}
}

type progressReader struct {
	rc    io.ReadCloser
	p     *progress
	what  string
	size  int64
	n     int64
	start time.Time
	last  time.Time
	done  bool
}

func (r *progressReader) Read(b []byte) (int, error) {
	n, err := r.rc.Read(b)
	r.n += int64(n)
	if r.p.tty && !r.done && time.Since(r.last) > 100*time.Millisecond {
		r.last = time.Now()
		r.draw()
	}
	if err == io.EOF && !r.done {
		r.done = true
		if r.p.tty {
			r.draw()
			r.p.printf("\n")
		} else {
			r.p.printf("Downloaded %s (%s in %.1fs)\n", r.what, units.Bytes(r.n), time.Since(r.start).Seconds())
		}
	}
	return n, err
}

func (r *progressReader) draw() {
	const width = 30
	frac := 0.0
	if r.size > 0 {
		frac = float64(r.n) / float64(r.size)
		if frac > 1 {
			frac = 1
		}
	}
	fill := int(frac * width)
	name := r.what
	if len(name) > 40 {
		name = name[:40] + "…"
	}
	r.p.printf("\r\x1b[K%s [%s%s] %s / %s", name, strings.Repeat("=", fill), strings.Repeat(" ", width-fill), units.Bytes(r.n), units.Bytes(r.size))
}

func (r *progressReader) Close() error {
	if r.p.tty && !r.done {
		r.done = true
		r.p.printf("\n")
	}
	return r.rc.Close()
}
