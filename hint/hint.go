// Package hint holds the error type every docker2vm package returns for a
// failure a user can act on: what failed, the cause, and how to fix it.
// The commands print Error() after "Error:" and each fix under "How to fix:".
package hint

import "fmt"

// Error is a user-facing failure.
type Error struct {
	Msg   string   // what failed, naming the thing (layer, file, flag)
	Fixes []string // what the user can do, most useful first
	Err   error    // the cause, if any
}

// New returns an Error with a formatted message.
func New(err error, fixes []string, format string, args ...any) *Error {
	return &Error{Msg: fmt.Sprintf(format, args...), Fixes: fixes, Err: err}
}

func (e *Error) Error() string {
	switch {
	case e.Err != nil && e.Msg == "":
		return e.Err.Error()
	case e.Err != nil:
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Hints returns the fixes.
func (e *Error) Hints() []string { return e.Fixes }

// Of collects the fixes of every error in err's chain that offers any (a
// Hints() []string method), outermost first, without duplicates.
func Of(err error) []string {
	var out []string
	seen := map[string]bool{}
	var visit func(error)
	visit = func(e error) {
		for e != nil {
			if h, ok := e.(interface{ Hints() []string }); ok {
				for _, s := range h.Hints() {
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
