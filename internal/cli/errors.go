package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Error is a user-facing failure: a message and the ways to fix it.
type Error struct {
	Msg   string
	Hints []string
	Err   error
}

func (e *Error) Error() string {
	if e.Err != nil && e.Msg == "" {
		return e.Err.Error()
	}
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// HintList returns the hints (the field is named Hints).
func (e *Error) HintList() []string { return e.Hints }

// HintsOf collects the hints of every error in err's chain that has any
// (any type with a Hints() or HintList() []string method, since error
// types that keep hints in a Hints field cannot also have a Hints method),
// outermost first, without
// duplicates.
func HintsOf(err error) []string {
	var out []string
	seen := map[string]bool{}
	var visit func(error)
	visit = func(e error) {
		for e != nil {
			var hs []string
			switch h := e.(type) {
			case interface{ Hints() []string }:
				hs = h.Hints()
			case interface{ HintList() []string }:
				hs = h.HintList()
			}
			if hs != nil {
				for _, s := range hs {
					if !seen[s] {
						seen[s] = true
						out = append(out, s)
					}
				}
			}
			switch u := e.(type) {
			case interface{ Unwrap() []error }:
				for _, x := range u.Unwrap() {
					visit(x)
				}
				return
			case interface{ Unwrap() error }:
				e = u.Unwrap()
			default:
				return
			}
		}
	}
	visit(err)
	return out
}

// Render writes err to w as `Error: <message>` followed by `How to fix:`
// and one `  - <hint>` line per hint.
func Render(w io.Writer, err error) {
	msg := err.Error()
	if errors.Is(err, context.Canceled) {
		msg = "interrupted"
	}
	fmt.Fprintf(w, "Error: %s\n", strings.TrimSpace(msg))
	hints := HintsOf(err)
	if len(hints) > 0 {
		fmt.Fprintln(w, "How to fix:")
		for _, h := range hints {
			fmt.Fprintf(w, "  - %s\n", h)
		}
	}
}

// PrintJSON writes v as one indented JSON document.
func PrintJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
