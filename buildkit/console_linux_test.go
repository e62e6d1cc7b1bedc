package buildkit

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/term"
)

// openTerminal opens a pseudo-terminal standing for the user's terminal:
// what is written to the returned file shows up in the returned buffer.
func openTerminal(t *testing.T) (*os.File, func() string) {
	t.Helper()
	master, tty, err := term.OpenPTY()
	if err != nil {
		require.Missing(t, "%v", err)
	}
	if err := unix.IoctlSetWinsize(int(tty.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: 120}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var shown bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			mu.Lock()
			shown.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { tty.Close(); master.Close(); <-done })
	return tty, func() string {
		tty.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return shown.String()
	}
}

func fakeBuildctl(t *testing.T, fail string) {
	t.Helper()
	_, archive := installFake(t, "buildctl", "fake-buildctl.sh")
	t.Setenv("FAKE_BUILDCTL_ARCHIVE", archive)
	t.Setenv("FAKE_BUILDCTL_FAIL", fail)
}

// TestProgressOnATerminal: on a terminal, --progress auto is BuildKit's
// live view: the builder's stdout and stderr are a terminal, what it
// draws reaches the user's terminal, and a failure's cause still reaches
// the error message.
func TestProgressOnATerminal(t *testing.T) {
	for _, progress := range []Progress{ProgressAuto, ProgressTTY} {
		t.Run(string(progress), func(t *testing.T) {
			fakeBuildctl(t, "")
			tty, shown := openTerminal(t)
			o := testOptions(t, Buildctl)
			o.Log, o.Progress = tty, progress
			if got := o.ResolvedProgress(); got != ProgressTTY {
				t.Fatalf("progress %s on a terminal resolves to %s", progress, got)
			}
			if argv := Commands(o)[0].Argv; !strings.Contains(strings.Join(argv, " "), "build --progress tty") {
				t.Errorf("argv %q", argv)
			}
			if err := Build(context.Background(), o); err != nil {
				t.Fatal(err)
			}
			out := shown()
			for _, want := range []string{"+ buildctl build --progress tty", "stdout is a terminal", "stderr is a terminal", "\x1b[34m => exporting to oci image format"} {
				if !strings.Contains(out, want) {
					t.Errorf("the terminal shows %q, lacking %q", out, want)
				}
			}
			if b, _ := os.ReadFile(o.Output); string(b) != "pretend OCI archive" {
				t.Errorf("archive = %q", b)
			}
		})
	}
	t.Run("failure", func(t *testing.T) {
		fakeBuildctl(t, "run")
		tty, shown := openTerminal(t)
		o := testOptions(t, Buildctl)
		o.Log = tty
		err := Build(context.Background(), o)
		var he *hint.Error
		if !errors.As(err, &he) || !strings.Contains(he.Msg, "a RUN step failed with exit code 2: [2/2] RUN make\nits last output lines:\n  cc -o app app.c\n  app.c:1: error: expected ;") {
			t.Fatalf("err = %v", err)
		}
		if !strings.Contains(shown(), "app.c:1: error: expected ;") {
			t.Errorf("the builder's output did not reach the terminal")
		}
	})
}

// TestProgressOffATerminal: auto is plain when stderr is a file or a
// character device that is no terminal (/dev/null).
func TestProgressOffATerminal(t *testing.T) {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	for _, w := range []io.Writer{null, &bytes.Buffer{}} {
		o := Options{Log: w}
		if got := o.ResolvedProgress(); got != ProgressPlain {
			t.Errorf("%T: auto resolves to %s, want plain", w, got)
		}
	}
	if got := (Options{Log: nil}).ResolvedProgress(); got != ProgressQuiet {
		t.Errorf("no log: %s, want quiet", got)
	}
}
