package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/internal/console"
)

// Render writes err to w as `Error: <message>` followed by `How to fix:`
// and one `  - <hint>` line per hint.
func Render(w io.Writer, err error) {
	msg := err.Error()
	hints := hint.Of(err)
	if errors.Is(err, context.Canceled) {
		// Whatever was running when the user interrupted it has nothing
		// to fix (a base being hashed, a layer being read).
		msg, hints = "interrupted", nil
	}
	fmt.Fprintf(w, "Error: %s\n", strings.TrimSpace(msg))
	if len(hints) > 0 {
		fmt.Fprintln(w, "How to fix:")
		for _, h := range hints {
			fmt.Fprintf(w, "  - %s\n", h)
		}
	}
}

// RenderJSON writes err as --progress json's last event: {"type":
// "error", "message", "hints", "interrupted"} on one line.
func RenderJSON(w io.Writer, err error, interrupted bool) {
	msg, hints := strings.TrimSpace(err.Error()), hint.Of(err)
	if interrupted && errors.Is(err, context.Canceled) {
		msg, hints = "interrupted", nil
	}
	console.WriteEvent(w, console.Event{Type: "error", Message: msg, Hints: hints, Interrupted: interrupted})
}

// PrintJSON writes v as one indented JSON document.
func PrintJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
