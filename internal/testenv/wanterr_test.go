package testenv

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// fatalRecorder is a TB whose Fatalf records the message rather than
// ending the test.
type fatalRecorder struct {
	TB
	msg string
}

func (r *fatalRecorder) Helper() {}
func (r *fatalRecorder) Fatalf(format string, args ...any) {
	if r.msg == "" {
		r.msg = fmt.Sprintf(format, args...)
	}
}

func TestWantErr(t *testing.T) {
	for _, tc := range []struct {
		err   error
		parts []string
		fails string // what the failure says, "" for none
	}{
		{errors.New("pulling alpine: 404 not found"), []string{"alpine", "404"}, ""},
		{errors.New("pulling alpine: 404 not found"), nil, ""},
		{errors.New("pulling alpine: 404 not found"), []string{"alpine", "401"}, `does not contain "401"`},
		{nil, []string{"alpine"}, "got nil"},
		{nil, nil, "got nil"},
	} {
		r := &fatalRecorder{}
		WantErr(r, tc.err, tc.parts...)
		if tc.fails == "" && r.msg != "" || tc.fails != "" && !strings.Contains(r.msg, tc.fails) {
			t.Errorf("WantErr(%v, %q) failed with %q, want %q", tc.err, tc.parts, r.msg, tc.fails)
		}
	}
}
