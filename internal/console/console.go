// Package console owns the stream human progress is written to. On a
// terminal, downloads in progress have live bars at the bottom, fitted to
// the terminal's width and redrawn in place, and every other line is
// printed above them; elsewhere each download gets a line when it starts
// and one when it ends. Everything a run reports goes through one Console,
// so nothing else writes between the bars and the cursor. With
// --progress json the same reports are JSON objects, one per line (see
// Event).
package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/docker2vm/docker2vm/internal/term"
	"github.com/docker2vm/docker2vm/internal/units"
)

// redrawEvery is how often bars are redrawn as bytes arrive.
const redrawEvery = 100 * time.Millisecond

// defaultWidth is the width assumed of a terminal that does not say.
const defaultWidth = 80

// screen is the state a Console and its prefixed views share.
type screen struct {
	w     io.Writer
	tty   bool
	json  bool
	width func() int

	mu    sync.Mutex
	bars  []*Download // downloads in progress, by order (then as they started)
	drawn []int       // the widths of the bar lines on the screen
	last  time.Time   // when the bars were last drawn
	ids   int         // downloads started (json: their ids)
}

// Console writes progress to one stream. Its views (With) share the
// stream and the bars, and prefix what they write.
type Console struct {
	s      *screen
	prefix string
	kind   string // json: the type of the lines written (default "log")

	mu      sync.Mutex
	partial []byte // a line written without its newline yet
}

// New reports on w: with bars when w is a terminal, unless plain.
func New(w io.Writer, plain bool) *Console {
	tty := !plain && term.IsTerminal(w)
	return &Console{s: &screen{w: w, tty: tty, width: func() int { return term.Width(w) }}}
}

// Of is w when it is a Console, else a new one on w (see New). Nil for a
// nil w.
func Of(w io.Writer, plain bool) *Console {
	if w == nil {
		return nil
	}
	if c, ok := w.(*Console); ok {
		return c
	}
	return New(w, plain)
}

// Prefix is a view of w that starts each line, and each bar's name, with
// prefix. Nil for a nil w.
func Prefix(w io.Writer, prefix string) io.Writer {
	if w == nil {
		return nil
	}
	return Of(w, true).With(prefix)
}

// NewJSON reports on w as JSON objects, one per line (--progress json).
func NewJSON(w io.Writer) *Console {
	return &Console{s: &screen{w: w, json: true, width: func() int { return 0 }}}
}

// With is a view of c that adds prefix to each line and bar.
func (c *Console) With(prefix string) *Console {
	return &Console{s: c.s, prefix: c.prefix + prefix, kind: c.kind}
}

// Kind is a view of c whose lines are events of type kind in JSON (a
// builder's log: "build"); elsewhere the same as c.
func (c *Console) Kind(kind string) *Console {
	return &Console{s: c.s, prefix: c.prefix, kind: kind}
}

// JSON reports whether c writes JSON events.
func (c *Console) JSON() bool { return c != nil && c.s.json }

// Event is one line of --progress json: a line of progress (type "log"),
// of a builder's output ("build"), a download's start, progress and end
// ("download"), or the error a run ends with ("error", written by the
// command). Scope is the platform a multi-platform run's event is about.
type Event struct {
	Type    string `json:"type"`
	Scope   string `json:"scope,omitempty"`
	Message string `json:"message,omitempty"`
	// Downloads: ID is the same in a download's events; State is
	// "start", "progress", "done" or "abandoned"; Bytes have arrived of
	// Size.
	ID    int    `json:"id,omitempty"`
	What  string `json:"what,omitempty"`
	State string `json:"state,omitempty"`
	Bytes int64  `json:"bytes,omitempty"`
	Size  int64  `json:"size,omitempty"`
	// Errors: the ways to fix it, and whether the run was interrupted.
	Hints       []string `json:"hints,omitempty"`
	Interrupted bool     `json:"interrupted,omitempty"`
}

// WriteEvent writes e as one line of JSON.
func WriteEvent(w io.Writer, e Event) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// emit writes an event of c's scope.
func (c *Console) emit(e Event) {
	e.Scope = strings.Trim(c.prefix, "[] ")
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	WriteEvent(c.s.w, e)
}

// TTY reports whether c draws bars.
func (c *Console) TTY() bool { return c != nil && c.s.tty }

// Write prints each complete line of p above the bars (a line's end that
// has not arrived yet waits for it).
func (c *Console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.partial = append(c.partial, p...)
	i := bytes.LastIndexByte(c.partial, '\n')
	if i < 0 {
		return len(p), nil
	}
	var out []byte
	for _, line := range bytes.SplitAfter(c.partial[:i+1], []byte("\n")) {
		switch {
		case len(line) == 0:
		case c.s.json:
			kind := c.kind
			if kind == "" {
				kind = "log"
			}
			c.emit(Event{Type: kind, Message: strings.TrimRight(string(line), "\r\n")})
		default:
			out = append(append(out, c.prefix...), line...)
		}
	}
	c.partial = append(c.partial[:0], c.partial[i+1:]...)
	if len(out) == 0 {
		return len(p), nil
	}
	return len(p), c.s.print(out)
}

// Printf prints a line (a newline is added when format lacks one).
func (c *Console) Printf(format string, args ...any) {
	if c == nil {
		return
	}
	s := fmt.Sprintf(format, args...)
	if len(s) == 0 || s[len(s)-1] != '\n' {
		s += "\n"
	}
	c.Write([]byte(s))
}

// print writes text above the bars.
func (s *screen) print(text []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clear()
	_, err := s.w.Write(text)
	s.draw()
	return err
}

// clear removes the bars from the screen. Called with s.mu held.
func (s *screen) clear() {
	if len(s.drawn) == 0 {
		return
	}
	// Rows, not lines: a terminal narrowed since the bars were drawn
	// may have wrapped them.
	width, rows := s.cols(), 0
	for _, n := range s.drawn {
		rows += max(1, (n+width-1)/width)
	}
	fmt.Fprintf(s.w, "\x1b[%dA\r\x1b[J", rows)
	s.drawn = s.drawn[:0]
}

// cols is the terminal's width now.
func (s *screen) cols() int {
	if w := s.width(); w > 0 {
		return w
	}
	return defaultWidth
}

// draw draws a line per download in progress and one for them all, each
// narrower than the terminal so that none wraps. Called with s.mu held.
func (s *screen) draw() {
	if !s.tty || len(s.bars) == 0 {
		return
	}
	fit := s.cols() - 1
	var done, size int64
	var rate float64
	var buf bytes.Buffer
	for _, d := range s.bars {
		line := d.line(fit)
		buf.WriteString(line + "\n")
		s.drawn = append(s.drawn, utf8.RuneCountInString(line))
		done += d.n.Load()
		size += d.size
		rate += d.rate()
	}
	// What the downloads in progress have left, and when they will be done
	// at their present rates.
	line := fitColumns(fit, fmt.Sprintf("%d downloading:", len(s.bars)), -1, 0,
		fmt.Sprintf(" %s / %s", units.Bytes(done), units.Bytes(size)), ", "+units.Bytes(int64(rate))+"/s", eta(size-done, rate))
	buf.WriteString(line + "\n")
	s.drawn = append(s.drawn, utf8.RuneCountInString(line))
	s.w.Write(buf.Bytes())
	s.last = time.Now()
}

// Download is one blob's download, whose bytes may arrive over several
// connections: Add counts them, Finish or Abandon ends it.
type Download struct {
	c     *Console
	what  string
	size  int64
	n     atomic.Int64
	start time.Time
	order int
	done  bool // c.s.mu

	id       int       // json
	lastEmit time.Time // json: when its progress was last reported (c.s.mu)
}

// Start reports the start of a download of size bytes. On a terminal its
// bar goes among the others by order (a layer's index). A nil Console
// reports nothing.
func (c *Console) Start(what string, size int64, order int) *Download {
	if c == nil {
		return nil
	}
	d := &Download{c: c, what: what, size: size, start: time.Now(), order: order}
	s := c.s
	if s.json {
		s.mu.Lock()
		s.ids++
		d.id, d.lastEmit = s.ids, d.start
		s.mu.Unlock()
		c.emit(Event{Type: "download", ID: d.id, What: what, State: "start", Size: size})
		return d
	}
	if !s.tty {
		c.Printf("Downloading %s (%s)", what, units.Bytes(size))
		return d
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clear()
	i := len(s.bars)
	for i > 0 && s.bars[i-1].order > order {
		i--
	}
	s.bars = slices.Insert(s.bars, i, d)
	s.draw()
	return d
}

// Add counts n more bytes downloaded.
func (d *Download) Add(n int) {
	if d == nil || n <= 0 {
		return
	}
	d.n.Add(int64(n))
	s := d.c.s
	if s.json {
		s.mu.Lock()
		due := !d.done && time.Since(d.lastEmit) > redrawEvery
		if due {
			d.lastEmit = time.Now()
		}
		s.mu.Unlock()
		if due {
			d.c.emit(Event{Type: "download", ID: d.id, What: d.what, State: "progress", Bytes: d.n.Load(), Size: d.size})
		}
		return
	}
	if !s.tty {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !d.done && time.Since(s.last) > redrawEvery {
		s.clear()
		s.draw()
	}
}

// Finish says the download is complete (once).
func (d *Download) Finish() {
	if d != nil && d.c.s.json {
		d.endJSON("done")
	} else if d != nil {
		d.end(fmt.Sprintf("%sDownloaded %s (%s in %.1fs)\n", d.c.prefix, d.what, units.Bytes(d.n.Load()), time.Since(d.start).Seconds()))
	}
}

// Abandon takes the download's bar away without a word: it failed or was
// stopped, which is reported elsewhere.
func (d *Download) Abandon() {
	if d != nil && d.c.s.json {
		d.endJSON("abandoned")
	} else if d != nil {
		d.end("")
	}
}

// endJSON reports the download's end (once).
func (d *Download) endJSON(state string) {
	s := d.c.s
	s.mu.Lock()
	first := !d.done
	d.done = true
	s.mu.Unlock()
	if first {
		d.c.emit(Event{Type: "download", ID: d.id, What: d.what, State: state, Bytes: d.n.Load(), Size: d.size})
	}
}

// end takes d's bar away (once) and prints msg.
func (d *Download) end(msg string) {
	s := d.c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if d.done {
		return
	}
	d.done = true
	s.clear()
	if i := slices.Index(s.bars, d); i >= 0 {
		s.bars = slices.Delete(s.bars, i, i+1)
	}
	io.WriteString(s.w, msg)
	s.draw()
}

// line is d's bar, at most width columns wide.
func (d *Download) line(width int) string {
	n := d.n.Load()
	frac := 0.0
	if d.size > 0 {
		frac = min(1, float64(n)/float64(d.size))
	}
	rate := d.rate()
	return fitColumns(width, d.c.prefix+d.what, frac, 30, fmt.Sprintf(" %s / %s", units.Bytes(n), units.Bytes(d.size)),
		" "+units.Bytes(int64(rate))+"/s", eta(d.size-n, rate))
}

// rate is d's average speed so far, in bytes a second.
func (d *Download) rate() float64 {
	secs := time.Since(d.start).Seconds()
	if secs < 0.2 {
		return 0
	}
	return float64(d.n.Load()) / secs
}

// eta says when n bytes will be there at rate bytes a second ("" when it
// cannot tell).
func eta(n int64, rate float64) string {
	if rate <= 0 || n <= 0 {
		return ""
	}
	return fmt.Sprintf(", about %s left", (time.Duration(float64(n) / rate * float64(time.Second))).Round(time.Second))
}

// minName is the fewest columns a name is shortened to before the bar
// goes.
const minName = 16

// fitColumns lays out "name [bar] amount rate eta" in at most width
// columns. As the width shrinks it drops the estimate, then the rate,
// then narrows the bar (to 10), shortens the name (to minName), drops the
// bar, and at last cuts what is left. frac < 0 means no bar.
func fitColumns(width int, name string, frac float64, bar int, amount, rate, eta string) string {
	type layout struct {
		bar       int
		rate, eta bool
		shorten   bool // the name may be shortened to minName
	}
	layouts := []layout{{bar, true, true, false}, {bar, true, false, false}, {bar, false, false, false},
		{10, false, false, false}, {10, false, false, true}, {0, false, false, true}}
	if frac < 0 {
		layouts = []layout{{0, true, true, false}, {0, true, false, false}, {0, false, false, true}}
	}
	nameLen := utf8.RuneCountInString(name)
	for i, l := range layouts {
		tail := amount
		if l.rate {
			tail += rate
		}
		if l.eta {
			tail += eta
		}
		cols := utf8.RuneCountInString(tail)
		if l.bar > 0 {
			cols += l.bar + 3 // " [" and "]"
		}
		room := width - cols
		need := nameLen
		if l.shorten {
			need = min(nameLen, minName)
		}
		last := i == len(layouts)-1
		if room < need && !last {
			continue
		}
		s := cut(name, max(room, need))
		if l.bar > 0 {
			fill := int(frac * float64(l.bar))
			s += " [" + repeat('=', fill) + repeat(' ', l.bar-fill) + "]"
		}
		return cut(s+tail, width)
	}
	return ""
}

// cut shortens s to n columns, marking the cut with "…".
func cut(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	if n <= 0 {
		return ""
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

func repeat(c byte, n int) string {
	return string(bytes.Repeat([]byte{c}, max(n, 0)))
}
