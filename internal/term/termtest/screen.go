// Package termtest is a small terminal emulator for tests: it replays what
// a program wrote to a terminal of a given size and keeps what a user
// would see afterwards, the screen and the scrollback above it.
package termtest

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// Screen emulates the part of a VT100/xterm that progress output uses:
// printable text with deferred auto-wrap at the last column, CR, LF,
// backspace, tab, scrolling into a scrollback, and the CSI sequences for
// cursor movement (A B C D G H), erasing (J K) and attributes (ignored).
type Screen struct {
	cols, rows int
	grid       [][]rune
	wrapped    []bool // row i continues row i-1 (auto-wrap, not a newline)
	scroll     []string
	scrollWrap []bool
	x, y       int
	pending    bool // the last column was written: the next rune wraps

	buf []byte // an incomplete escape sequence or rune
}

// New is an empty screen of cols columns and rows rows.
func New(cols, rows int) *Screen {
	s := &Screen{cols: cols, rows: rows, grid: make([][]rune, rows), wrapped: make([]bool, rows)}
	for i := range s.grid {
		s.grid[i] = blank(cols)
	}
	return s
}

func blank(n int) []rune {
	r := make([]rune, n)
	for i := range r {
		r[i] = ' '
	}
	return r
}

// Write feeds what the program wrote.
func (s *Screen) Write(p []byte) (int, error) {
	s.buf = append(s.buf, p...)
	for len(s.buf) > 0 {
		n := s.step(s.buf)
		if n == 0 {
			break // incomplete: wait for more
		}
		s.buf = s.buf[n:]
	}
	return len(p), nil
}

// step consumes one rune, control or escape sequence from b, returning
// how many bytes it took (0 when b holds only part of one).
func (s *Screen) step(b []byte) int {
	switch c := b[0]; {
	case c == 0x1b:
		if len(b) < 2 {
			return 0
		}
		if b[1] != '[' {
			return 2 // other escapes (charset, keypad): ignored
		}
		for i := 2; i < len(b); i++ {
			if b[i] >= 0x40 && b[i] <= 0x7e {
				s.csi(string(b[2:i]), b[i])
				return i + 1
			}
		}
		return 0
	case c == '\r':
		s.x, s.pending = 0, false
	case c == '\n':
		s.lineFeed(false)
	case c == '\b':
		if s.x > 0 {
			s.x--
		}
		s.pending = false
	case c == '\t':
		s.x = min(s.cols-1, (s.x/8+1)*8)
	case c < 0x20 || c == 0x7f:
		// other controls: ignored
	default:
		if !utf8.FullRune(b) {
			return 0
		}
		r, n := utf8.DecodeRune(b)
		s.put(r)
		return n
	}
	return 1
}

func (s *Screen) put(r rune) {
	if s.pending {
		s.x = 0
		s.lineFeed(true)
	}
	s.grid[s.y][s.x] = r
	if s.x == s.cols-1 {
		s.pending = true
	} else {
		s.x++
	}
}

// lineFeed moves down a row, scrolling the top row into the scrollback at
// the bottom; soft marks the new row as a continuation of the one above.
func (s *Screen) lineFeed(soft bool) {
	s.pending = false
	if s.y == s.rows-1 {
		s.scroll = append(s.scroll, strings.TrimRight(string(s.grid[0]), " "))
		s.scrollWrap = append(s.scrollWrap, s.wrapped[0])
		copy(s.grid, s.grid[1:])
		copy(s.wrapped, s.wrapped[1:])
		s.grid[s.rows-1] = blank(s.cols)
	} else {
		s.y++
	}
	s.wrapped[s.y] = soft
}

func (s *Screen) csi(params string, final byte) {
	var args []int
	if params != "" && params[0] != '?' {
		for _, f := range strings.Split(params, ";") {
			n, _ := strconv.Atoi(f)
			args = append(args, n)
		}
	}
	arg := func(i, def int) int {
		if i < len(args) && args[i] > 0 {
			return args[i]
		}
		return def
	}
	clamp := func(v, hi int) int { return max(0, min(v, hi)) }
	switch final {
	case 'A':
		s.y = clamp(s.y-arg(0, 1), s.rows-1)
	case 'B':
		s.y = clamp(s.y+arg(0, 1), s.rows-1)
	case 'C':
		s.x = clamp(s.x+arg(0, 1), s.cols-1)
	case 'D':
		s.x = clamp(s.x-arg(0, 1), s.cols-1)
	case 'G':
		s.x = clamp(arg(0, 1)-1, s.cols-1)
	case 'H':
		s.y, s.x = clamp(arg(0, 1)-1, s.rows-1), clamp(arg(1, 1)-1, s.cols-1)
	case 'J':
		from := s.y
		if len(args) > 0 && args[0] == 2 {
			from = 0
		} else {
			copy(s.grid[s.y][s.x:], blank(s.cols-s.x))
			if s.x == 0 {
				s.wrapped[s.y] = false // all of the row's text is gone
			}
			from = s.y + 1
		}
		for i := from; i < s.rows; i++ {
			s.grid[i], s.wrapped[i] = blank(s.cols), false
		}
	case 'K':
		if len(args) > 0 && args[0] == 2 {
			s.grid[s.y] = blank(s.cols)
		} else {
			copy(s.grid[s.y][s.x:], blank(s.cols-s.x))
		}
	}
	s.pending = false
}

// Rows are the scrollback's rows, then the screen's, as shown (without
// trailing spaces, and without the blank rows at the bottom).
func (s *Screen) Rows() []string {
	rows, _ := s.all()
	return rows
}

// Lines are the logical lines shown: rows joined where one wrapped onto
// the next.
func (s *Screen) Lines() []string {
	rows, wrapped := s.all()
	var lines []string
	for i, r := range rows {
		if wrapped[i] && len(lines) > 0 {
			lines[len(lines)-1] += r
			continue
		}
		lines = append(lines, r)
	}
	return lines
}

func (s *Screen) all() ([]string, []bool) {
	rows := append([]string(nil), s.scroll...)
	wrapped := append([]bool(nil), s.scrollWrap...)
	for i, g := range s.grid {
		// A wrapped row keeps its full width: its trailing spaces were text.
		r := string(g)
		if i+1 >= len(s.wrapped) || !s.wrapped[i+1] {
			r = strings.TrimRight(r, " ")
		}
		rows = append(rows, r)
		wrapped = append(wrapped, s.wrapped[i])
	}
	for len(rows) > 0 && rows[len(rows)-1] == "" {
		rows, wrapped = rows[:len(rows)-1], wrapped[:len(wrapped)-1]
	}
	return rows, wrapped
}
