package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemoGondolinScript runs scripts/demo-gondolin.sh (make demo on
// macOS) against stand-ins for npm, QEMU, the gondolin CLI and the
// converter that record their arguments: it checks the script's order and
// its exact commands (those the README's Mac section lists), and that a
// missing tool is named with its install command. The real tools run it
// on a Mac; here the network it needs is not there.
func TestDemoGondolinScript(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	// The script goes by the machine (uname -m), not by how this test
	// binary was built (an arm64 one runs under qemu-user here).
	m, err := exec.Command("uname", "-m").Output()
	if err != nil {
		t.Fatal(err)
	}
	qemu, arch := "qemu-system-x86_64", "amd64"
	if s := strings.TrimSpace(string(m)); s == "arm64" || s == "aarch64" {
		qemu, arch = "qemu-system-aarch64", "arm64"
	}
	work := t.TempDir()
	log := filepath.Join(work, "log")
	stub := func(path string) {
		t.Helper()
		os.MkdirAll(filepath.Dir(path), 0o755)
		script := "#!/bin/sh\necho \"$(basename \"$0\") $*\" >> " + log + "\n"
		if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tools := filepath.Join(work, "tools")
	host := filepath.Join(work, "host")
	bin := filepath.Join(work, "bin")
	stub(filepath.Join(bin, "oci2gondolin"))
	stub(filepath.Join(host, "node_modules", ".bin", "gondolin"))
	stub(filepath.Join(host, "node_modules", "node", "bin", "node"))
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	run := func(path string) (string, error) {
		cmd := exec.Command(sh, filepath.Join(root, "scripts", "demo-gondolin.sh"))
		cmd.Env = append(os.Environ(), "PATH="+path, "BIN="+bin, "GONDOLIN_HOST_DIR="+host, "OUT=out/x")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// The few system tools the script and the stand-ins use, and nothing
	// else of the machine's (which may have QEMU).
	sys := filepath.Join(work, "sys")
	os.MkdirAll(sys, 0o755)
	for _, tool := range []string{"sh", "dirname", "basename", "uname"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(p, filepath.Join(sys, tool)); err != nil {
			t.Fatal(err)
		}
	}

	stub(filepath.Join(tools, "npm"))
	out, err := run(tools + ":" + sys)
	if err == nil || !strings.Contains(out, "demo: "+qemu+" is missing.") || !strings.Contains(out, "qemu") {
		t.Fatalf("without QEMU: %v\n%s", err, out)
	}
	stub(filepath.Join(tools, qemu))
	if out, err = run(tools + ":" + sys); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	b, _ := os.ReadFile(log)
	want := "gondolin image pull alpine-base:latest\n" +
		"oci2gondolin --image docker.io/library/busybox:latest --platform linux/" + arch + " --mode assets --out out/x\n" +
		"gondolin exec -- /bin/uname -a\n"
	if !strings.HasPrefix(string(b), want) {
		t.Errorf("commands run:\n%s\nwant them to start with:\n%s", b, want)
	}
}
