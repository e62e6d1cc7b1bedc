package testenv

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// What the fixtures of more than one package below need.

// ModuleRoot returns the docker2vm module's source directory, which the
// fixtures build from (the guest agent, BuildKit's build script, the
// Gondolin host harness): the one this file was compiled from, else the
// main module goTool reports.
func ModuleRoot(goTool string) (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok {
		root := filepath.Join(filepath.Dir(file), "..", "..")
		if _, err := os.Stat(filepath.Join(root, "internal", "guestagent", "cmd", "sandboxd")); err == nil {
			return filepath.Clean(root), nil
		}
	}
	out, err := exec.Command(goTool, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("cannot locate the docker2vm module root")
	}
	return filepath.Dir(gomod), nil
}

// debianDefaultMirror is the Debian mirror when apt names none.
const debianDefaultMirror = "http://deb.debian.org/debian"

// DebianMirror is the Debian mirror apt uses: the first non-security
// Debian URI of /etc/apt/sources.list.d/debian.sources, else
// deb.debian.org.
func DebianMirror() string {
	raw, err := os.ReadFile("/etc/apt/sources.list.d/debian.sources")
	if err != nil {
		return debianDefaultMirror
	}
	for _, stanza := range strings.Split(string(raw), "\n\n") {
		fields := map[string]string{}
		for _, line := range strings.Split(stanza, "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, " ") {
				fields[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
			}
		}
		if !strings.Contains(" "+fields["types"]+" ", " deb ") || strings.EqualFold(fields["enabled"], "no") {
			continue
		}
		main := false
		for _, s := range strings.Fields(fields["suites"]) {
			if !strings.Contains(s, "-") && !strings.Contains(s, "/") {
				main = true
			}
		}
		uris := strings.Fields(fields["uris"])
		if main && len(uris) > 0 && strings.HasPrefix(uris[0], "http") {
			return strings.TrimSuffix(uris[0], "/")
		}
	}
	return debianDefaultMirror
}

// FreePort returns a TCP port on the loopback address that was free a
// moment ago, for a server the test starts.
func FreePort(t TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Tail is the last n bytes of s (a tool's output in an error message),
// marked as cut when it is.
func Tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
