// Command demo is `make demo`: it builds a sample image, pushes it to a
// local registry, converts it with oci2gondolin into a Gondolin guest and
// boots it with the real Gondolin host, printing what the guest ran.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker2vm/docker2vm/internal/testenv"
	"github.com/docker2vm/docker2vm/internal/testenv/gondolintest"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
	"github.com/docker2vm/docker2vm/internal/testenv/registrytest"
)

func main() {
	bin := flag.String("bin", "bin/oci2gondolin", "the oci2gondolin binary to demonstrate")
	out := flag.String("out", "out/demo", "where the converted guest goes")
	platform := flag.String("platform", "linux/amd64", "the guest's platform: linux/amd64 or linux/arm64 (booted under qemu-system-aarch64)")
	verbose := flag.Bool("v", false, "print fixture build details")
	flag.Parse()
	c := &testenv.Console{Name: "demo", Verbose: *verbose, Indent: "      "}
	code := demo(c, *bin, *out, *platform)
	c.Close()
	os.Exit(code)
}

func demo(c *testenv.Console, bin, out, platform string) int {
	start := time.Now()
	step := func(n int, what string) { fmt.Printf("\n[%d/4] %s\n", n, what) }
	goos, arch, _ := strings.Cut(platform, "/")
	arch, _, _ = strings.Cut(arch, "/") // linux/arm64/v8
	if goos != "linux" || (arch != testenv.AMD64 && arch != testenv.ARM64) {
		fmt.Printf("demo: unsupported platform %q: use linux/amd64 or linux/arm64\n", platform)
		return 2
	}

	step(1, "Gondolin base bundle for "+arch+" (Debian cloud kernel, busybox initramfs, docker2vm's test guest agent)")
	base := gondolintest.BaseBundleArch(c, arch)
	fmt.Printf("      %s\n", base)

	step(2, "Sample "+platform+" image: busybox + an app script, two layers (gzip, zstd), pushed to a local registry")
	reg := registrytest.Start(c, registrytest.Options{})
	ref := reg.Push(c, "demo/busybox-app:latest", imagetest.Busybox(c, gondolintest.BaseBusybox(c, base)), nil)
	fmt.Printf("      %s\n", ref)

	step(3, "Convert with oci2gondolin")
	args := []string{"--image", ref, "--platform", platform, "--mode", "assets", "--base", base, "--out", out, "--no-cache"}
	fmt.Printf("      $ %s %s\n", bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, prefixed{os.Stdout}
	if err := cmd.Run(); err != nil {
		fmt.Printf("demo: oci2gondolin failed: %v\n", err)
		return 1
	}
	var res struct {
		OutDir string   `json:"outDir"`
		Files  []string `json:"files"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		fmt.Printf("demo: oci2gondolin printed no JSON result: %v\n%s", err, stdout.String())
		return 1
	}
	fmt.Printf("      result on stdout (JSON): outDir=%s\n", res.OutDir)
	for _, f := range res.Files {
		fmt.Printf("        %s\n", filepath.Base(f))
	}

	step(4, "Boot the guest with the Gondolin host (QEMU, TCG) and run commands in it")
	cmds := [][]string{
		{"uname", "-sr"},
		{"cat", "/etc/os-release"},
		{"id"},
		{"/bin/sh", "-c", "echo GREETING=$GREETING"},
		{"/usr/bin/docker2vm-entrypoint"},
		{"/bin/sh", "-c", "echo written > /srv/new && cat /srv/new"},
	}
	specs := make([]gondolintest.ExecSpec, len(cmds))
	for i, a := range cmds {
		specs[i] = gondolintest.ExecSpec{Argv: a}
	}
	rep, err := gondolintest.Run(c, res.OutDir, gondolintest.BootOptions{}, specs...)
	if err != nil {
		fmt.Printf("demo: boot failed: %v\n", err)
		return 1
	}
	failed := false
	for _, r := range rep.Results {
		fmt.Printf("      guest$ %s\n", strings.Join(r.Argv, " "))
		for _, line := range strings.Split(strings.TrimRight(r.Stdout+r.Stderr, "\n"), "\n") {
			fmt.Printf("        %s\n", line)
		}
		if r.ExitCode != 0 {
			fmt.Printf("        (exit %d)\n", r.ExitCode)
			failed = true
		}
	}
	fmt.Printf("\nBoot and %d commands took %s under TCG; the whole demo %s.\n",
		len(rep.Results), (rep.BootTime + rep.ExecTime).Round(time.Millisecond), time.Since(start).Round(time.Second))
	fmt.Printf("The guest directory %s is a Gondolin asset directory: use it as sandbox.imagePath (SDK) or GONDOLIN_GUEST_DIR.\n", res.OutDir)
	if failed {
		return 1
	}
	return 0
}

// prefixed indents the converter's progress lines under the step.
type prefixed struct{ w *os.File }

func (p prefixed) Write(b []byte) (int, error) {
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if line != "" {
			fmt.Fprintf(p.w, "      | %s", line)
		}
	}
	return len(b), nil
}
