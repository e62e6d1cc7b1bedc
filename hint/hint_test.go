package hint

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
)

type plain struct{ fixes []string }

func (p plain) Error() string   { return "plain" }
func (p plain) Hints() []string { return p.fixes }

func TestError(t *testing.T) {
	cause := errors.New("cause")
	tests := []struct {
		err  *Error
		want string
	}{
		{&Error{Msg: "m"}, "m"},
		{&Error{Msg: "m", Err: cause}, "m: cause"},
		{&Error{Err: cause}, "cause"},
		{New(cause, nil, "layer %d", 2), "layer 2: cause"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
	if !errors.Is(&Error{Msg: "m", Err: cause}, cause) {
		t.Error("Unwrap does not reach the cause")
	}
}

func TestOf(t *testing.T) {
	inner := &Error{Msg: "inner", Fixes: []string{"b", "a"}}
	wrapped := fmt.Errorf("context: %w", &Error{Msg: "outer", Fixes: []string{"a"}, Err: inner})
	joined := errors.Join(plain{[]string{"c"}}, wrapped)
	tests := []struct {
		err  error
		want []string
	}{
		{nil, nil},
		{errors.New("x"), nil},
		{wrapped, []string{"a", "b"}},
		{joined, []string{"c", "a", "b"}},
	}
	for _, tt := range tests {
		if got := Of(tt.err); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Of(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
