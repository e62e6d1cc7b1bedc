package shell

import (
	"os/exec"
	"testing"

	"github.com/docker2vm/docker2vm/internal/require"
)

// TestQuote: what sh reads back is the word quoted, whatever it holds.
func TestQuote(t *testing.T) {
	sh := require.Tool(t, "sh")
	words := []string{"", "plain", "two words", "it's", `a"b`, "$HOME", "`id`", `back\slash`, "new\nline", "*?[a]", "--opt=a=b", "'''", "é ü"}
	for _, w := range words {
		for name, q := range map[string]string{"Quote": Quote(w), "Word": Word(w)} {
			out, err := exec.Command(sh, "-c", `printf %s `+q).Output()
			if err != nil || string(out) != w {
				t.Errorf("%s(%q) = %s: sh reads back %q, %v", name, w, q, out, err)
			}
		}
	}
	for in, want := range map[string]string{"/usr/bin/x": "/usr/bin/x", "build-arg:A=1": "build-arg:A=1", "a b": "'a b'", "": "''", "x;y": "'x;y'"} {
		if got := Word(in); got != want {
			t.Errorf("Word(%q) = %s, want %s", in, got, want)
		}
	}
	if got := Join([]string{"buildctl", "--opt", "label:app=my app"}); got != "buildctl --opt 'label:app=my app'" {
		t.Errorf("Join = %s", got)
	}
}
