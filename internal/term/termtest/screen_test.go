package termtest

import (
	"slices"
	"strings"
	"testing"
)

func TestScreen(t *testing.T) {
	for _, tc := range []struct {
		name        string
		cols, rows  int
		in          string
		rows2, want []string
	}{
		{"lines", 10, 3, "one\r\ntwo\r\n", []string{"one", "two"}, []string{"one", "two"}},
		{"wrap", 4, 3, "abcdefg\r\n", []string{"abcd", "efg"}, []string{"abcdefg"}},
		{"exact width does not wrap early", 4, 3, "abcd\r\nx", []string{"abcd", "x"}, []string{"abcd", "x"}},
		{"scrollback", 10, 2, "a\r\nb\r\nc\r\nd", []string{"a", "b", "c", "d"}, []string{"a", "b", "c", "d"}},
		{"redraw in place", 10, 5, "out\r\nbar 1\r\n\x1b[1A\r\x1b[Jout2\r\nbar 2\r\n", []string{"out", "out2", "bar 2"}, []string{"out", "out2", "bar 2"}},
		{"cursor up too few leaves a fragment", 6, 5, "bar 123456\r\n\x1b[1A\r\x1b[Jx\r\n", []string{"bar 12", "x"}, []string{"bar 12", "x"}},
		{"erase line", 10, 2, "abcdef\rab\x1b[K\r\n", []string{"ab"}, []string{"ab"}},
		{"sequences split across writes", 10, 3, "a\x1b", []string{"a"}, []string{"a"}},
		{"utf-8", 3, 2, "é…x\r\n", []string{"é…x"}, []string{"é…x"}},
	} {
		s := New(tc.cols, tc.rows)
		for _, c := range []byte(tc.in) { // a byte at a time: split sequences too
			s.Write([]byte{c})
		}
		if got := s.Rows(); !slices.Equal(got, tc.rows2) {
			t.Errorf("%s: rows %q, want %q", tc.name, got, tc.rows2)
		}
		if got := s.Lines(); !slices.Equal(got, tc.want) {
			t.Errorf("%s: lines %q, want %q", tc.name, got, tc.want)
		}
	}
	// A line that wraps at a narrower width, redrawn by going up one row
	// only, leaves its first row behind.
	s := New(5, 4)
	s.Write([]byte(strings.Repeat("x", 8) + "\r\n\x1b[1A\r\x1b[Jdone\r\n"))
	if got := s.Rows(); !slices.Equal(got, []string{"xxxxx", "done"}) {
		t.Errorf("rows %q", got)
	}
}
