package cli

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// signalChild is the command the signal tests run in a child process: it
// makes a temporary file (which its cleanup removes), then either waits to
// be interrupted or writes its result to a closed stdout.
func signalChild() *Command {
	return &Command{Name: "child", Run: func(ctx context.Context, _ []string, stdout, stderr io.Writer) error {
		tmp := os.Getenv("SIGNAL_CHILD_TMP")
		if err := os.WriteFile(tmp, []byte("x"), 0o644); err != nil {
			return err
		}
		defer os.Remove(tmp)
		io.WriteString(stderr, "ready\n")
		if os.Getenv("SIGNAL_CHILD") == "wait" {
			<-ctx.Done()
			return ctx.Err()
		}
		time.Sleep(100 * time.Millisecond) // the reader has gone
		for range 100 {
			if _, err := io.WriteString(stdout, strings.Repeat("{}", 4096)); err != nil {
				return err
			}
		}
		return errors.New("stdout never failed")
	}}
}

func TestMain(m *testing.M) {
	if os.Getenv("SIGNAL_CHILD") != "" {
		os.Exit(signalChild().Main(nil, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// TestSignals: SIGINT and SIGTERM exit 130 after the run cleaned up; a
// closed stdout (SIGPIPE) fails the run, which also cleans up.
func TestSignals(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode string
		sig  syscall.Signal
		code int
	}{
		{"SIGINT", "wait", syscall.SIGINT, ExitInterrupted},
		{"SIGTERM", "wait", syscall.SIGTERM, ExitInterrupted},
		{"closed stdout", "write", 0, ExitFailure},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmp := filepath.Join(t.TempDir(), "tmp")
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), "SIGNAL_CHILD="+tc.mode, "SIGNAL_CHILD_TMP="+tmp)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			stderr, _ := cmd.StderrPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 6)
			if _, err := io.ReadFull(stderr, buf); err != nil || string(buf) != "ready\n" {
				t.Fatalf("child: %q %v", buf, err)
			}
			if tc.sig != 0 {
				cmd.Process.Signal(tc.sig)
			} else {
				stdout.Close()
			}
			rest, _ := io.ReadAll(stderr)
			err = cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != tc.code {
				t.Fatalf("exit: %v, want code %d; stderr %s", err, tc.code, rest)
			}
			if _, err := os.Stat(tmp); !os.IsNotExist(err) {
				t.Errorf("the temporary file survived: %v", err)
			}
			if tc.sig != 0 && !strings.Contains(string(rest), "Error: interrupted") {
				t.Errorf("stderr %q", rest)
			}
		})
	}
}
