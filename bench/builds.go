package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/docker2vm/docker2vm/internal/testenv"
	"github.com/docker2vm/docker2vm/internal/testenv/buildkittest"
	"github.com/docker2vm/docker2vm/internal/testenv/gondolintest"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
	"github.com/docker2vm/docker2vm/internal/testenv/registrytest"
)

// `make bench-build` (bench -builds): what BuildKit's cache saves when an
// image is built again after a one-line change in its last step, the loop
// of iterating on an agent's sandbox image. Each run builds a Dockerfile
// whose slow steps stand in for package installs (a few seconds of CPU in
// a shell loop, a sleep for downloads, 32 MB of data in a layer), all
// offline, with dockerfile2gondolin:
//
//  1. first: a Dockerfile no build has seen (a fresh line after FROM, so
//     only the pulled base image is in the builder's cache);
//  2. edited: the same after changing its last RUN step;
//  3. edited, --no-cache: what every build cost while docker buildx ran on
//     a throwaway builder (and what --no-cache costs now).
//
// through buildctl and through docker buildx (a remote-driver builder on
// the same buildkitd; the default docker-container builder needs a Docker
// engine, which the benchmark machine lacks), into rootfs mode with a
// fresh --cache-dir each time, so that docker2vm's own caches play no part.

const (
	bFirst   = "first build"
	bEdited  = "last step edited"
	bNoCache = "last step edited, --no-cache"
)

const buildDockerfile = `FROM %s
RUN echo %s > /nonce
# Stands for compiling: a few seconds of CPU.
RUN i=0; while [ $i -lt %d ]; do i=$((i+1)); done; echo $i > /cpu
# Stands for downloads: waiting.
RUN busybox sleep 3 && echo fetched > /fetched
# Stands for what they install: 32 MB in a layer.
RUN mkdir -p /opt/data && busybox dd if=/dev/urandom of=/opt/data/blob bs=1M count=32 2>/dev/null
COPY app.sh /usr/local/bin/app.sh
RUN echo %s > /version
`

var reCachedLine = regexp.MustCompile(`(?m)^#\d+ CACHED$`)

type buildsConfig struct {
	runs          int
	bin           string // dockerfile2gondolin
	md            string
	loops         int
	reconvertOnly bool
}

func runBuilds(c *testenv.Console, cfg buildsConfig) int {
	if os.Geteuid() != 0 {
		fmt.Println("bench: buildkitd with the OCI worker needs root; run as root")
		return 1
	}
	bin, _ := filepath.Abs(cfg.bin)
	if _, err := os.Stat(bin); err != nil {
		fmt.Printf("bench: %s: %v (make build makes it)\n", bin, err)
		return 1
	}
	for _, tool := range []string{"/usr/bin/time", registrytest.Binary} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Printf("bench: %s not found (make deps installs it)\n", tool)
			return 1
		}
	}
	machine := machineInfo()
	loadBefore := loadAvg()
	fmt.Print(machine)

	reg := registrytest.Start(c, registrytest.Options{})
	base := gondolintest.BaseBundleArch(c, testenv.AMD64)
	from := reg.Push(c, "busybox:base", imagetest.Busybox(c, gondolintest.BaseBusybox(c, base)), nil)
	bk := buildkittest.Start(c, buildkittest.Options{InsecureRegistries: []string{reg.Host}})
	os.Setenv("PATH", bk.BinDir+string(os.PathListSeparator)+os.Getenv("PATH"))

	builders := []struct{ name, label string }{{"buildctl", "buildctl"}}
	builderArgs := map[string][]string{"buildctl": {"--builder", "buildctl", "--buildkit-addr", bk.Addr}}
	if buildxUsable() {
		cfgDir := buildkittest.DockerBuildx(c)
		os.Setenv("DOCKER_CONFIG", cfgDir)
		bk.BuildxBuilder(c, cfgDir, "bench")
		builders = append(builders, struct{ name, label string }{"buildx", "docker buildx (remote driver)"})
		builderArgs["buildx"] = []string{"--buildx-builder", "bench"}
	} else {
		fmt.Println("bench: docker buildx is not usable here (make deps installs the plugin); timing buildctl only")
	}

	work := c.TempDir()
	ctxDir := filepath.Join(work, "ctx")
	if err := os.MkdirAll(ctxDir, 0o755); err != nil {
		fmt.Println("bench:", err)
		return 1
	}
	if err := os.WriteFile(filepath.Join(ctxDir, "app.sh"), []byte("#!/bin/sh\necho app\n"), 0o755); err != nil {
		fmt.Println("bench:", err)
		return 1
	}
	df := filepath.Join(ctxDir, "Dockerfile")
	results := map[string]map[string][]metric{}
	cached := map[string]string{} // builder -> the edited build's CACHED steps, from the last run
	for _, b := range builders {
		results[b.name] = map[string][]metric{}
	}
	if cfg.reconvertOnly {
		reconvert, err := runReconvert(c, cfg.runs, bk, from, base, filepath.Join(filepath.Dir(bin), "oci2gondolin"))
		if err != nil {
			fmt.Println("bench: reconversion:", err)
			return 1
		}
		fmt.Print(reconvert)
		if cfg.md != "" {
			if err := writeSection(cfg.md, reconvertBegin, reconvertEnd, reconvert); err != nil {
				fmt.Println("bench:", err)
				return 1
			}
		}
		return 0
	}
	for r := range cfg.runs {
		for _, b := range builders {
			nonce := fmt.Sprintf("%s-%d-%d", b.name, r, time.Now().UnixNano())
			for _, p := range []string{bFirst, bEdited, bNoCache} {
				version := "v1"
				if p != bFirst {
					version = "v2"
				}
				if err := os.WriteFile(df, []byte(fmt.Sprintf(buildDockerfile, from, nonce, cfg.loops, version)), 0o644); err != nil {
					fmt.Println("bench:", err)
					return 1
				}
				out := filepath.Join(work, "out")
				cacheDir := filepath.Join(work, "cache")
				os.RemoveAll(out)
				os.RemoveAll(cacheDir)
				args := append(append([]string{}, builderArgs[b.name]...), "--context", ctxDir, "--platform", "linux/amd64",
					"--mode", "rootfs", "--base", base, "--cache-dir", cacheDir, "--out", out, "--progress", "plain")
				if p == bNoCache {
					args = append(args, "--no-cache")
				}
				m, log, err := runCmdLog(nil, bin, args...)
				if err != nil {
					fmt.Println("bench:", err)
					return 1
				}
				results[b.name][p] = append(results[b.name][p], m)
				report(r, b.label+": "+p, m)
				if p == bEdited {
					cached[b.name] = fmt.Sprintf("%d", len(reCachedLine.FindAllString(log, -1)))
				}
			}
		}
	}
	reconvert, err := runReconvert(c, cfg.runs, bk, from, base, filepath.Join(filepath.Dir(bin), "oci2gondolin"))
	if err != nil {
		fmt.Println("bench: reconversion:", err)
		return 1
	}
	loadAfter := loadAvg()

	var t strings.Builder
	t.WriteString("| builder | first build | last step edited | edited / first | last step edited, `--no-cache` | steps CACHED in the edited build |\n|---|---:|---:|---:|---:|---:|\n")
	for _, b := range builders {
		res := results[b.name]
		first, edited, nocache := median(res[bFirst]), median(res[bEdited]), median(res[bNoCache])
		fmt.Fprintf(&t, "| %s | %s | %s | %.2f | %s | %s |\n", b.label, secs(first.Wall), secs(edited.Wall),
			edited.Wall.Seconds()/first.Wall.Seconds(), secs(nocache.Wall), cached[b.name])
	}
	header := fmt.Sprintf("Run %s, `make bench-build` (%d runs each, medians; wall time of the whole dockerfile2gondolin run, build and conversion).\n\n%s\nLoad average before: %s, after: %s.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), cfg.runs, machine, loadBefore, loadAfter)
	body := header + t.String() + "\nThe Dockerfile (its slow steps stand in for package installs; the shell loop runs " +
		fmt.Sprint(cfg.loops) + " iterations):\n\n```dockerfile\n" + fmt.Sprintf(buildDockerfile, "REGISTRY/busybox:base", "NONCE", cfg.loops, "v1") + "```\n"
	fmt.Println()
	fmt.Print(body)
	fmt.Println()
	fmt.Print(reconvert)
	if cfg.md != "" {
		if err := writeSection(cfg.md, buildsBegin, buildsEnd, body); err != nil {
			fmt.Println("bench:", err)
			return 1
		}
		if err := writeSection(cfg.md, reconvertBegin, reconvertEnd, reconvert); err != nil {
			fmt.Println("bench:", err)
			return 1
		}
		fmt.Printf("results written to %s\n", cfg.md)
	}
	return 0
}

const (
	buildsBegin = "<!-- bench-build results: begin (generated by `make bench-build`) -->"
	buildsEnd   = "<!-- bench-build results: end -->"
)

// buildxUsable reports whether docker and its buildx plugin run here.
func buildxUsable() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, "docker", "buildx", "version").Run() == nil
}
