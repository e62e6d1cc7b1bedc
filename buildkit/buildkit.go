// Package buildkit builds a Dockerfile into an OCI image archive with
// BuildKit, through `docker buildx` or `buildctl`. Build logs go to the
// caller's log writer (stderr); nothing is printed on stdout.
package buildkit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/docker2vm/docker2vm/hint"
)

// Builder names a build front end.
type Builder string

const (
	DockerBuildx Builder = "docker-buildx"
	Buildctl     Builder = "buildctl"
)

// Options describe one build.
type Options struct {
	Builder    Builder
	Dockerfile string // path to the Dockerfile
	Context    string // build context directory
	Platform   string // e.g. linux/amd64
	Target     string
	BuildArgs  []string // KEY=VALUE
	Secrets    []string // BuildKit secret specs, passed through
	// Addr is the BuildKit address for buildctl (unix://, tcp://); "" uses
	// BUILDKIT_HOST or buildctl's default.
	Addr string
	// TLS for a tcp:// BuildKit.
	TLSCACert, TLSCert, TLSKey, TLSServerName string
	// BuildxBuilder reuses an existing named buildx builder instead of a
	// throwaway docker-container builder.
	BuildxBuilder string
	// Output is where the OCI archive goes.
	Output string
	// Log receives build logs (stderr).
	Log io.Writer
}

var buildArgKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Error is a build failure with hints for the user.
type Error = hint.Error

// Validate checks the options before anything runs.
func Validate(o Options) error {
	switch o.Builder {
	case DockerBuildx, Buildctl:
	default:
		return &Error{Msg: fmt.Sprintf("Unknown builder %q.", o.Builder),
			Fixes: []string{"Use --builder docker-buildx or --builder buildctl."}}
	}
	for _, a := range o.BuildArgs {
		k, _, ok := strings.Cut(a, "=")
		if !ok || !buildArgKey.MatchString(k) {
			return &Error{Msg: fmt.Sprintf("Invalid --build-arg %q.", a),
				Fixes: []string{"Write --build-arg KEY=VALUE, with KEY made of letters, digits and underscores."}}
		}
	}
	for _, s := range o.Secrets {
		if strings.TrimSpace(s) == "" {
			return &Error{Msg: "Empty --secret.", Fixes: []string{"Write --secret id=NAME,src=PATH (BuildKit's secret syntax)."}}
		}
	}
	st, err := os.Stat(o.Dockerfile)
	if err != nil || st.IsDir() {
		return &Error{Msg: fmt.Sprintf("Dockerfile %s not found.", o.Dockerfile),
			Fixes: []string{"Pass the path of an existing Dockerfile with --file."}}
	}
	st, err = os.Stat(o.Context)
	if err != nil || !st.IsDir() {
		return &Error{Msg: fmt.Sprintf("Build context %s is not a directory.", o.Context),
			Fixes: []string{"Pass an existing directory with --context."}}
	}
	if o.Builder == DockerBuildx && o.Addr != "" {
		return &Error{Msg: "--buildkit-addr applies to --builder buildctl only.",
			Fixes: []string{"Use --builder buildctl --buildkit-addr ADDR, or --buildx-builder NAME for docker buildx."}}
	}
	if o.Builder == Buildctl && o.BuildxBuilder != "" {
		return &Error{Msg: "--buildx-builder applies to --builder docker-buildx only.",
			Fixes: []string{"Drop --buildx-builder, or use --builder docker-buildx."}}
	}
	return nil
}

// Step is one command a build runs.
type Step struct {
	Argv []string `json:"argv"`
	// Cleanup steps run even when the build fails.
	Cleanup bool `json:"cleanup,omitempty"`
}

// Commands returns the exact commands Build runs, in order. throwaway names
// the temporary buildx builder (ignored when BuildxBuilder is set).
func Commands(o Options, throwaway string) []Step {
	switch o.Builder {
	case Buildctl:
		return []Step{{Argv: buildctlArgv(o)}}
	default:
		builder := o.BuildxBuilder
		var steps []Step
		if builder == "" {
			builder = throwaway
			steps = append(steps, Step{Argv: []string{"docker", "buildx", "create", "--name", builder, "--driver", "docker-container"}})
		}
		argv := []string{"docker", "buildx", "build", "--builder", builder,
			"--file", o.Dockerfile,
			"--platform", o.Platform,
			"--output", "type=oci,dest=" + o.Output,
			"--provenance=false"}
		if o.Target != "" {
			argv = append(argv, "--target", o.Target)
		}
		for _, a := range o.BuildArgs {
			argv = append(argv, "--build-arg", a)
		}
		for _, s := range o.Secrets {
			argv = append(argv, "--secret", s)
		}
		argv = append(argv, o.Context)
		steps = append(steps, Step{Argv: argv})
		if o.BuildxBuilder == "" {
			steps = append(steps, Step{Argv: []string{"docker", "buildx", "rm", "--force", builder}, Cleanup: true})
		}
		return steps
	}
}

func buildctlArgv(o Options) []string {
	argv := []string{"buildctl"}
	if o.Addr != "" {
		argv = append(argv, "--addr", o.Addr)
	}
	for _, f := range [][2]string{{"--tlscacert", o.TLSCACert}, {"--tlscert", o.TLSCert}, {"--tlskey", o.TLSKey}, {"--tlsservername", o.TLSServerName}} {
		if f[1] != "" {
			argv = append(argv, f[0], f[1])
		}
	}
	argv = append(argv, "build",
		"--frontend", "dockerfile.v0",
		"--local", "context="+o.Context,
		"--local", "dockerfile="+filepath.Dir(o.Dockerfile),
		"--opt", "filename="+filepath.Base(o.Dockerfile),
		"--opt", "platform="+o.Platform,
	)
	if o.Target != "" {
		argv = append(argv, "--opt", "target="+o.Target)
	}
	for _, a := range o.BuildArgs {
		argv = append(argv, "--opt", "build-arg:"+a)
	}
	for _, s := range o.Secrets {
		argv = append(argv, "--secret", s)
	}
	argv = append(argv, "--output", "type=oci,dest="+o.Output)
	return argv
}

// ThrowawayName returns a fresh name for a temporary buildx builder.
func ThrowawayName() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "docker2vm-" + hex.EncodeToString(b[:])
}

// Build runs the build. The output archive is removed when the build fails
// or is cancelled; cleanup steps run in every case.
func Build(ctx context.Context, o Options) (err error) {
	if err := Validate(o); err != nil {
		return err
	}
	log := o.Log
	if log == nil {
		log = io.Discard
	}
	tool := "docker"
	if o.Builder == Buildctl {
		tool = "buildctl"
	}
	if _, lerr := exec.LookPath(tool); lerr != nil {
		return missingTool(o.Builder, tool)
	}
	defer func() {
		if err != nil {
			os.Remove(o.Output)
		}
	}()
	steps := Commands(o, ThrowawayName())
	var cleanups []Step
	for _, s := range steps {
		if s.Cleanup {
			cleanups = append(cleanups, s)
		}
	}
	defer func() {
		for _, c := range cleanups {
			// Cleanup must run even after Ctrl-C, so not under ctx.
			cmd := exec.Command(c.Argv[0], c.Argv[1:]...)
			cmd.Stdout, cmd.Stderr = log, log
			if cerr := cmd.Run(); cerr != nil {
				fmt.Fprintf(log, "warning: %s failed: %v\n", strings.Join(c.Argv, " "), cerr)
			}
		}
	}()
	for _, s := range steps {
		if s.Cleanup {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		fmt.Fprintf(log, "+ %s\n", strings.Join(s.Argv, " "))
		cmd := exec.CommandContext(ctx, s.Argv[0], s.Argv[1:]...)
		tail := &tailWriter{max: 4096}
		// One writer for both streams: exec then copies them with a single
		// goroutine. Two writers sharing log raced (a bytes.Buffer lost the
		// build output entirely).
		w := io.MultiWriter(log, tail)
		cmd.Stdout, cmd.Stderr = w, w
		if rerr := cmd.Run(); rerr != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return stepError(o, s, rerr, tail.String())
		}
	}
	if st, serr := os.Stat(o.Output); serr != nil || st.Size() == 0 {
		return &Error{Msg: fmt.Sprintf("%s finished but wrote no OCI archive at %s", tool, o.Output),
			Fixes: []string{"Check the build log above; the builder must support --output type=oci."}}
	}
	return nil
}

func missingTool(b Builder, tool string) error {
	if b == Buildctl {
		return &Error{Msg: "buildctl not found on PATH",
			Fixes: []string{"Install BuildKit's buildctl (https://github.com/moby/buildkit/releases) and put it on PATH.",
				"Or use --builder docker-buildx with a Docker engine."}}
	}
	return &Error{Msg: "docker not found on PATH",
		Fixes: []string{"Install Docker with the buildx plugin, or use --builder buildctl with a BuildKit daemon."}}
}

func stepError(o Options, s Step, err error, tail string) error {
	msg := fmt.Sprintf("%s failed", stepName(s))
	var hints []string
	low := strings.ToLower(tail)
	switch {
	case o.Builder == Buildctl && (strings.Contains(low, "connection refused") || strings.Contains(low, "no such file or directory") && strings.Contains(low, "sock") || strings.Contains(low, "failed to dial") || strings.Contains(low, "connection error")):
		msg = "cannot reach the BuildKit daemon"
		hints = []string{"Start buildkitd, or point --buildkit-addr (or BUILDKIT_HOST) at a running one, e.g. unix:///run/buildkit/buildkitd.sock or tcp://HOST:1234."}
	case o.Builder == DockerBuildx && (strings.Contains(low, "cannot connect to the docker daemon") || strings.Contains(low, "is the docker daemon running")):
		msg = "cannot reach the Docker daemon"
		hints = []string{"Start Docker (or set DOCKER_HOST), or use --builder buildctl with a BuildKit daemon."}
	case o.Builder == DockerBuildx && strings.Contains(low, "buildx") && strings.Contains(low, "not a docker command"):
		msg = "the docker buildx plugin is not installed"
		hints = []string{"Install the buildx plugin (package docker-buildx or docker-buildx-plugin)."}
	case strings.Contains(low, "exec format error"):
		// A RUN step for an architecture the build host cannot execute.
		msg = "a RUN step of the " + o.Platform + " build cannot run on this host (exec format error)"
		hints = []string{"Building for another architecture runs its RUN steps under emulation: install qemu-user-static " +
			"and register it with binfmt_misc (Debian/Ubuntu: apt-get install qemu-user-static binfmt-support; with Docker: " +
			"docker run --privileged --rm tonistiigi/binfmt --install all), on the machine that runs BuildKit.",
			"Or build only for this host's architecture with --platform."}
	default:
		hints = []string{"Read the build log above for the failing step.", "Fix the Dockerfile or the build context and run again."}
		if o.Log == nil || o.Log == io.Discard {
			hints[0] = "Run again without --quiet to see the build log."
		}
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		msg = fmt.Sprintf("%s (exit status %d)", msg, ee.ExitCode())
		err = nil
	}
	// The builder's own last error line names the failing step and its
	// exit code; the log above it may have been discarded (--quiet).
	if cause := lastErrorLine(tail); cause != "" {
		msg += ": " + cause
	}
	return &Error{Msg: msg, Fixes: hints, Err: err}
}

// stepName is the command and subcommand of a step, for messages:
// "buildctl build", "docker buildx build".
func stepName(s Step) string {
	if len(s.Argv) > 0 && s.Argv[0] == "buildctl" {
		for _, a := range s.Argv[1:] {
			if a == "build" {
				return "buildctl build"
			}
		}
	}
	return strings.Join(s.Argv[:min(3, len(s.Argv))], " ")
}

// lastErrorLine returns the last "error: ..." (buildctl) or "ERROR: ..."
// (buildx) line of a build log without its prefix, shortened.
func lastErrorLine(log string) string {
	lines := strings.Split(log, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if len(l) > len("error:") && strings.EqualFold(l[:len("error:")], "error:") {
			l = strings.TrimSpace(l[len("error:"):])
			if len(l) > 400 {
				l = l[:400] + "..."
			}
			return l
		}
	}
	return ""
}

// tailWriter keeps the last max bytes written, to classify failures.
type tailWriter struct {
	max int
	buf []byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(p), nil
}

func (t *tailWriter) String() string { return string(t.buf) }
