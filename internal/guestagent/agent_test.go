package guestagent

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/docker2vm/docker2vm/internal/require"
)

// fakeHost drives an Agent over in-memory pipes the way Gondolin's host does.
type fakeHost struct {
	t      *testing.T
	toAg   *io.PipeWriter
	fromAg *io.PipeReader
	msgs   chan Message
	served chan error
}

func newFakeHost(t *testing.T) *fakeHost {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("agent tests need Linux")
	}
	hostR, agentW := io.Pipe()
	agentR, hostW := io.Pipe()
	h := &fakeHost{t: t, toAg: hostW, fromAg: hostR, msgs: make(chan Message, 1024), served: make(chan error, 1)}
	a := NewAgent()
	go func() {
		h.served <- a.Serve(struct {
			io.Reader
			io.Writer
		}{agentR, agentW})
	}()
	go func() {
		defer close(h.msgs)
		for {
			m, err := ReadMessage(hostR)
			if err != nil {
				return
			}
			h.msgs <- m
		}
	}()
	t.Cleanup(func() {
		hostW.Close()
		hostR.Close()
		select {
		case <-h.served:
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after the connection closed")
		}
	})
	if m := h.next(); m.Type != TypeVfsReady {
		t.Fatalf("first message %+v, want vfs_ready", m)
	}
	return h
}

func (h *fakeHost) send(m Message) {
	h.t.Helper()
	frame, err := EncodeFrame(m)
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.toAg.Write(frame); err != nil {
		h.t.Fatal(err)
	}
}

func (h *fakeHost) next() Message {
	h.t.Helper()
	select {
	case m, ok := <-h.msgs:
		if !ok {
			h.t.Fatal("agent connection closed")
		}
		return m
	case <-time.After(20 * time.Second):
		h.t.Fatal("timed out waiting for a message from the agent")
	}
	return Message{}
}

type execResult struct {
	stdout, stderr bytes.Buffer
	exitCode       int
	signal         int
	stdinCredit    int
	errors         []Message
}

// wait collects output for id until exec_response (or an error frame).
func (h *fakeHost) wait(id uint32) *execResult {
	h.t.Helper()
	r := &execResult{}
	for {
		m := h.next()
		if m.ID != id {
			h.t.Fatalf("message for unexpected id: %+v", m)
		}
		switch m.Type {
		case TypeExecOutput:
			data, _ := m.Payload["data"].([]byte)
			switch m.Payload["stream"] {
			case "stdout":
				r.stdout.Write(data)
			case "stderr":
				r.stderr.Write(data)
			default:
				h.t.Fatalf("bad stream %v", m.Payload["stream"])
			}
		case TypeStdinWindow:
			r.stdinCredit += int(optUint(m.Payload, "stdin"))
		case TypeExecResponse:
			switch c := m.Payload["exit_code"].(type) {
			case uint64:
				r.exitCode = int(c)
			default:
				h.t.Fatalf("exit_code %T", c)
			}
			r.signal = int(optUint(m.Payload, "signal"))
			return r
		case TypeError:
			r.errors = append(r.errors, m)
			return r
		default:
			h.t.Fatalf("unexpected %+v", m)
		}
	}
}

func (h *fakeHost) exec(id uint32, p map[string]any) *execResult {
	h.t.Helper()
	h.send(Message{Type: TypeExecRequest, ID: id, Payload: p})
	return h.wait(id)
}

func TestAgentExec(t *testing.T) {
	h := newFakeHost(t)
	dir := t.TempDir()

	r := h.exec(1, map[string]any{"cmd": "/bin/sh", "argv": []string{"-c", "echo out; echo err >&2; exit 3"}})
	if r.stdout.String() != "out\n" || r.stderr.String() != "err\n" || r.exitCode != 3 || r.signal != 0 {
		t.Fatalf("got stdout %q stderr %q exit %d sig %d", r.stdout.String(), r.stderr.String(), r.exitCode, r.signal)
	}

	// PATH lookup uses the request's env; env and cwd are applied.
	r = h.exec(2, map[string]any{"cmd": "sh", "argv": []string{"-c", `echo "$FOO:$(pwd)"`}, "env": []string{"FOO=bar", "PATH=/usr/bin:/bin"}, "cwd": dir})
	if got, want := r.stdout.String(), "bar:"+dir+"\n"; got != want || r.exitCode != 0 {
		t.Fatalf("env/cwd: got %q (exit %d) want %q", got, r.exitCode, want)
	}

	// Killed by a signal: exit 128+n and signal n.
	r = h.exec(3, map[string]any{"cmd": "/bin/sh", "argv": []string{"-c", "kill -9 $$"}})
	if r.exitCode != 137 || r.signal != 9 {
		t.Fatalf("signal: exit %d signal %d", r.exitCode, r.signal)
	}

	// Missing command: 127 with a message.
	r = h.exec(4, map[string]any{"cmd": "no-such-command-xyz"})
	if r.exitCode != 127 || !strings.Contains(r.stderr.String(), "no-such-command-xyz") {
		t.Fatalf("missing command: exit %d stderr %q", r.exitCode, r.stderr.String())
	}
	r = h.exec(5, map[string]any{"cmd": "/bin/true", "cwd": filepath.Join(dir, "missing")})
	if r.exitCode != 127 {
		t.Fatalf("missing cwd: exit %d", r.exitCode)
	}

	// Large output arrives complete and in order.
	r = h.exec(6, map[string]any{"cmd": "/bin/sh", "argv": []string{"-c", "head -c 1000000 /dev/zero | tr '\\0' x"}})
	if r.stdout.Len() != 1000000 || strings.Trim(r.stdout.String(), "x") != "" {
		t.Fatalf("large output: %d bytes", r.stdout.Len())
	}

	// A background child holding the pipe does not hang the exec.
	start := time.Now()
	r = h.exec(7, map[string]any{"cmd": "/bin/sh", "argv": []string{"-c", "sleep 5 & echo started"}})
	if r.stdout.String() != "started\n" || time.Since(start) > 4*time.Second {
		t.Fatalf("background child: %q after %v", r.stdout.String(), time.Since(start))
	}
}

func TestAgentStdin(t *testing.T) {
	h := newFakeHost(t)
	h.send(Message{Type: TypeExecRequest, ID: 10, Payload: map[string]any{"cmd": "/bin/cat", "stdin": true}})
	m := h.next()
	if m.Type != TypeStdinWindow || m.ID != 10 || optUint(m.Payload, "stdin") == 0 {
		t.Fatalf("want stdin_window first, got %+v", m)
	}
	h.send(Message{Type: TypeStdinData, ID: 10, Payload: map[string]any{"data": []byte("hello ")}})
	h.send(Message{Type: TypeStdinData, ID: 10, Payload: map[string]any{"data": []byte("world"), "eof": true}})
	r := h.wait(10)
	if r.stdout.String() != "hello world" || r.exitCode != 0 {
		t.Fatalf("cat: %q exit %d", r.stdout.String(), r.exitCode)
	}
	if r.stdinCredit < len("hello ") {
		t.Fatalf("credits not replenished: %d", r.stdinCredit)
	}

	// EOF with an empty payload (allowed without credit by the host).
	h.send(Message{Type: TypeExecRequest, ID: 11, Payload: map[string]any{"cmd": "/bin/sh", "argv": []string{"-c", "wc -c"}, "stdin": true}})
	h.send(Message{Type: TypeStdinData, ID: 11, Payload: map[string]any{"data": []byte{}, "eof": true}})
	r = h.wait(11)
	if strings.TrimSpace(r.stdout.String()) != "0" {
		t.Fatalf("wc -c: %q", r.stdout.String())
	}

	// Many small chunks (more chunks than any fixed queue would hold).
	h.send(Message{Type: TypeExecRequest, ID: 13, Payload: map[string]any{"cmd": "/bin/sh", "argv": []string{"-c", "sleep 0.2; wc -c"}, "stdin": true}})
	if m := h.next(); m.Type != TypeStdinWindow {
		t.Fatalf("want stdin_window, got %+v", m)
	}
	for i := 0; i < 500; i++ {
		h.send(Message{Type: TypeStdinData, ID: 13, Payload: map[string]any{"data": []byte("x")}})
	}
	h.send(Message{Type: TypeStdinData, ID: 13, Payload: map[string]any{"data": []byte{}, "eof": true}})
	r = h.wait(13)
	if strings.TrimSpace(r.stdout.String()) != "500" {
		t.Fatalf("500 one-byte chunks: %q", r.stdout.String())
	}

	// Without stdin the command reads /dev/null.
	r = h.exec(12, map[string]any{"cmd": "/bin/cat"})
	if r.stdout.Len() != 0 || r.exitCode != 0 {
		t.Fatalf("cat without stdin: %q exit %d", r.stdout.String(), r.exitCode)
	}
	// stdin_data for an unknown id is ignored.
	h.send(Message{Type: TypeStdinData, ID: 99, Payload: map[string]any{"data": []byte("x")}})
}

func TestAgentPty(t *testing.T) {
	if _, err := os.Stat("/dev/ptmx"); err != nil {
		require.Missing(t, "no /dev/ptmx: %v", err)
	}
	h := newFakeHost(t)
	h.send(Message{Type: TypeExecRequest, ID: 20, Payload: map[string]any{"cmd": "/bin/sh", "argv": []string{"-c", "stty size; test -t 0 && echo tty"}, "pty": true}})
	if m := h.next(); m.Type != TypeStdinWindow {
		t.Fatalf("want stdin_window, got %+v", m)
	}
	h.send(Message{Type: TypePtyResize, ID: 20, Payload: map[string]any{"rows": 33, "cols": 101}})
	r := h.wait(20)
	if r.exitCode != 0 || !strings.Contains(r.stdout.String(), "tty") {
		t.Fatalf("pty: %q exit %d", r.stdout.String(), r.exitCode)
	}

	// Interactive input through the terminal; EOF becomes ^D.
	h.send(Message{Type: TypeExecRequest, ID: 21, Payload: map[string]any{"cmd": "/bin/cat", "pty": true}})
	if m := h.next(); m.Type != TypeStdinWindow {
		t.Fatalf("want stdin_window, got %+v", m)
	}
	h.send(Message{Type: TypeStdinData, ID: 21, Payload: map[string]any{"data": []byte("ping\n"), "eof": true}})
	r = h.wait(21)
	if r.exitCode != 0 || strings.Count(r.stdout.String(), "ping") != 2 { // echo + cat's copy
		t.Fatalf("pty cat: %q exit %d", r.stdout.String(), r.exitCode)
	}
}

func TestAgentErrors(t *testing.T) {
	h := newFakeHost(t)
	h.send(Message{Type: "file_read_request", ID: 30, Payload: map[string]any{"path": "/etc/hostname"}})
	m := h.next()
	if m.Type != TypeError || m.ID != 30 || m.Payload["code"] != "unsupported" {
		t.Fatalf("got %+v", m)
	}
	h.send(Message{Type: TypeExecRequest, ID: 31, Payload: map[string]any{"argv": []string{"x"}}})
	m = h.next()
	if m.Type != TypeError || m.ID != 31 || m.Payload["code"] != "invalid_request" {
		t.Fatalf("got %+v", m)
	}
	// A malformed frame is reported and the connection stays usable.
	if _, err := h.toAg.Write([]byte{0, 0, 0, 2, 0xa1, 0x01}); err != nil {
		t.Fatal(err)
	}
	if m = h.next(); m.Type != TypeError {
		t.Fatalf("got %+v", m)
	}
	r := h.exec(32, map[string]any{"cmd": "/bin/echo", "argv": []string{"still", "alive"}})
	if r.stdout.String() != "still alive\n" {
		t.Fatalf("got %q", r.stdout.String())
	}
}

func TestMergeEnv(t *testing.T) {
	got := MergeEnv([]string{"A=1", "B=2", "junk"}, []string{"B=3", "C=", "=x", "A=4"})
	want := []string{"A=4", "B=3", "C="}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("got %v want %v", got, want)
	}
}

// TestServeVfsError: a guest whose filesystem failed says so first, as
// Gondolin's sandboxd does, instead of vfs_ready.
func TestServeVfsError(t *testing.T) {
	for _, tc := range []struct {
		failed   string
		wantType string
	}{{"", TypeVfsReady}, {"sandboxfs binary missing", TypeVfsError}} {
		hostR, agentW := io.Pipe()
		agentR, hostW := io.Pipe()
		a := NewAgent()
		a.VfsError = func() string { return tc.failed }
		done := make(chan error, 1)
		go func() {
			done <- a.Serve(struct {
				io.Reader
				io.Writer
			}{agentR, agentW})
		}()
		m, err := ReadMessage(hostR)
		if err != nil {
			t.Fatal(err)
		}
		if m.Type != tc.wantType || (tc.failed != "" && m.Payload["message"] != tc.failed) {
			t.Errorf("VfsError %q: first message %+v", tc.failed, m)
		}
		hostW.Close()
		hostR.Close()
		<-done
	}
}
