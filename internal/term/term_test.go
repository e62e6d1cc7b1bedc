package term

import (
	"bytes"
	"io"
	"os"
	"testing"
)

func TestIsTerminal(t *testing.T) {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	f, _ := os.CreateTemp(t.TempDir(), "x")
	defer f.Close()
	for name, w := range map[string]io.Writer{"/dev/null": null, "a file": f, "a buffer": &bytes.Buffer{}} {
		if IsTerminal(w) {
			t.Errorf("%s is taken for a terminal", name)
		}
	}
}
