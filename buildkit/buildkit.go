// Package buildkit builds a Dockerfile into an OCI image archive with
// BuildKit, through `docker buildx` or `buildctl`, taking the flags of
// `docker buildx build` and passing each to the builder in its own
// spelling. Build logs go to the caller's log writer (stderr); nothing is
// printed on stdout.
package buildkit

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/internal/shell"
	"github.com/docker2vm/docker2vm/internal/term"
)

// Builder names a build front end.
type Builder string

const (
	DockerBuildx Builder = "docker-buildx"
	Buildctl     Builder = "buildctl"
)

// DefaultBuildxBuilder is the buildx builder docker2vm creates on first
// use and keeps, so that BuildKit's cache survives between builds.
const DefaultBuildxBuilder = "docker2vm"

// Progress is how the build shows its progress (--progress).
type Progress string

const (
	// ProgressAuto is ProgressTTY when the log is a terminal, else
	// ProgressPlain.
	ProgressAuto Progress = "auto"
	// ProgressPlain is BuildKit's plain text log.
	ProgressPlain Progress = "plain"
	// ProgressTTY is BuildKit's live view; the log must be a terminal.
	ProgressTTY Progress = "tty"
	// ProgressQuiet shows nothing; the builder's output is kept for the
	// error message only.
	ProgressQuiet Progress = "quiet"
)

// Options describe one build.
type Options struct {
	Builder    Builder
	Dockerfile string // path to the Dockerfile
	Context    string // build context directory
	Platform   string // e.g. linux/amd64, or a comma-separated list
	Target     string
	// BuildArgs are KEY=VALUE, or KEY to take the value from the
	// environment (not passed when KEY is unset there).
	BuildArgs []string
	Secrets   []string // BuildKit secret specs: id=NAME,src=PATH | id=NAME,env=VAR
	SSH       []string // default | ID[=SOCKET|KEY[,KEY]]
	// BuildContexts are NAME=PATH or NAME=docker-image://REF.
	BuildContexts []string
	// CacheFrom and CacheTo are cache import and export specs (REF, or
	// type=registry|local|...,...).
	CacheFrom, CacheTo []string
	// Pull always fetches the base images, even when the builder has them.
	Pull bool
	// Network is the network mode of RUN steps: default, none or host.
	Network string
	// Labels are image labels, KEY=VALUE.
	Labels []string
	// NoCache builds every step again, without BuildKit's cache.
	NoCache bool
	// Progress is how the build is shown on Log; "" is ProgressAuto.
	Progress Progress
	// Addr is the BuildKit address for buildctl (unix://, tcp://); "" uses
	// BUILDKIT_HOST or buildctl's default.
	Addr string
	// TLS for a tcp:// BuildKit.
	TLSCACert, TLSCert, TLSKey, TLSServerName string
	// BuildxBuilder is the buildx builder to build with; "" is
	// DefaultBuildxBuilder. It is created (docker-container driver) when
	// it does not exist, and never removed.
	BuildxBuilder string
	// Output is where the OCI archive goes.
	Output string
	// Log receives build logs and notes (stderr).
	Log io.Writer
	// LookupEnv reads the environment (build arguments given as KEY,
	// SSH_AUTH_SOCK, secrets named by id); nil is os.LookupEnv.
	LookupEnv func(string) (string, bool)
}

func (o Options) lookupEnv(k string) (string, bool) {
	if o.LookupEnv != nil {
		return o.LookupEnv(k)
	}
	return os.LookupEnv(k)
}

// buildxBuilder is the buildx builder a build uses.
func (o Options) buildxBuilder() string {
	if o.BuildxBuilder != "" {
		return o.BuildxBuilder
	}
	return DefaultBuildxBuilder
}

// ResolvedProgress is the progress mode a build runs with: auto becomes
// tty on a terminal and plain otherwise; no log is quiet.
func (o Options) ResolvedProgress() Progress {
	if o.Log == nil || o.Log == io.Discard {
		return ProgressQuiet
	}
	switch o.Progress {
	case "", ProgressAuto:
		if term.IsTerminal(o.Log) {
			return ProgressTTY
		}
		return ProgressPlain
	}
	return o.Progress
}

// Validate checks the options before anything runs: every flag's syntax,
// and that the local files and directories they name exist.
//
// Long: one check per flag, in the order --help lists them, each with its
// own message and fix; split, each would be a function called once.
func Validate(o Options) error {
	switch o.Builder {
	case DockerBuildx, Buildctl:
	default:
		return &hint.Error{Msg: fmt.Sprintf("Unknown builder %q.", o.Builder),
			Fixes: []string{"Use --builder docker-buildx or --builder buildctl."}}
	}
	if _, err := parseBuildArgs(o.BuildArgs, o.lookupEnv); err != nil {
		return err
	}
	for _, s := range o.Secrets {
		if err := checkSecret(s, o.lookupEnv); err != nil {
			return err
		}
	}
	for _, s := range o.SSH {
		if err := checkSSH(s, o.lookupEnv); err != nil {
			return err
		}
	}
	if _, err := parseBuildContexts(o.BuildContexts, o.Builder); err != nil {
		return err
	}
	for _, c := range o.CacheFrom {
		if err := checkCache("cache-from", c); err != nil {
			return err
		}
	}
	for _, c := range o.CacheTo {
		if err := checkCache("cache-to", c); err != nil {
			return err
		}
	}
	if o.Network != "" && !slices.Contains(networkModes, o.Network) {
		return &hint.Error{Msg: fmt.Sprintf("Unknown --network %q.", o.Network),
			Fixes: []string{"Use --network default, --network none or --network host (RUN steps in the host's network; the builder must allow the network.host entitlement)."}}
	}
	for _, l := range o.Labels {
		if err := checkLabel(l); err != nil {
			return err
		}
	}
	switch o.Progress {
	case "", ProgressAuto, ProgressPlain, ProgressQuiet:
	case ProgressTTY:
		if !term.IsTerminal(o.Log) {
			return &hint.Error{Msg: "--progress tty needs a terminal, and stderr is not one.",
				Fixes: []string{"Use --progress plain (or auto, which picks tty on a terminal and plain otherwise)."}}
		}
	default:
		return &hint.Error{Msg: fmt.Sprintf("Unknown --progress %q.", o.Progress),
			Fixes: []string{"Use --progress auto (the default: BuildKit's live view on a terminal, plain text otherwise), plain, tty or quiet."}}
	}
	if o.Dockerfile == "-" {
		return &hint.Error{Msg: "Reading the Dockerfile from stdin (--file -) is not supported.",
			Fixes: []string{"Write the Dockerfile to a file and pass its path with --file."}}
	}
	st, err := os.Stat(o.Dockerfile)
	if err != nil || st.IsDir() {
		fix := "Pass the path of an existing Dockerfile with --file."
		if filepath.Dir(o.Dockerfile) == filepath.Clean(o.Context) && filepath.Base(o.Dockerfile) == "Dockerfile" {
			fix = "Pass --file PATH, or --context DIR for a directory that holds a Dockerfile (--file defaults to CONTEXT/Dockerfile)."
		}
		return &hint.Error{Msg: fmt.Sprintf("Dockerfile %s not found.", o.Dockerfile), Fixes: []string{fix}}
	}
	st, err = os.Stat(o.Context)
	if err != nil || !st.IsDir() {
		return &hint.Error{Msg: fmt.Sprintf("Build context %s is not a directory.", o.Context),
			Fixes: []string{"Pass an existing directory with --context (default: the current directory)."}}
	}
	if o.Builder == DockerBuildx {
		for _, f := range [][2]string{{"buildkit-addr", o.Addr}, {"tlscacert", o.TLSCACert}, {"tlscert", o.TLSCert}, {"tlskey", o.TLSKey}, {"tlsservername", o.TLSServerName}} {
			if f[1] != "" {
				return &hint.Error{Msg: "--" + f[0] + " applies to --builder buildctl only.",
					Fixes: []string{"Use --builder buildctl --buildkit-addr ADDR, or point a buildx builder at that BuildKit: docker buildx create --name NAME --driver remote ADDR, then --buildx-builder NAME."}}
			}
		}
	}
	if o.Builder == Buildctl && o.BuildxBuilder != "" {
		return &hint.Error{Msg: "--buildx-builder applies to --builder docker-buildx only.",
			Fixes: []string{"Drop --buildx-builder, or use --builder docker-buildx."}}
	}
	return nil
}

// Step roles.
const (
	// RoleCheck makes sure the tool works (docker buildx is installed);
	// its output is shown only when it fails.
	RoleCheck = "check"
	// RoleFindBuilder looks the buildx builder up.
	RoleFindBuilder = "find-builder"
	// RoleCreateBuilder creates the buildx builder; it runs only when
	// RoleFindBuilder found none.
	RoleCreateBuilder = "create-builder"
	// RoleBuild is the build.
	RoleBuild = "build"
)

// Step is one command a build runs.
type Step struct {
	Argv []string `json:"argv"`
	Role string   `json:"role"`
	// When says when the step runs, if not always.
	When string `json:"when,omitempty"`
}

// Commands returns the exact commands Build runs, in order. It expects
// options that passed Validate.
func Commands(o Options) []Step {
	if o.Builder == Buildctl {
		return []Step{{Argv: buildctlArgv(o), Role: RoleBuild}}
	}
	name := o.buildxBuilder()
	return []Step{
		{Argv: []string{"docker", "buildx", "version"}, Role: RoleCheck},
		{Argv: []string{"docker", "buildx", "inspect", name}, Role: RoleFindBuilder},
		{Argv: []string{"docker", "buildx", "create", "--name", name, "--driver", "docker-container"}, Role: RoleCreateBuilder,
			When: "the builder " + name + " does not exist"},
		{Argv: buildxArgv(o, name), Role: RoleBuild},
	}
}

// builderProgress is the --progress the builder itself gets: quiet runs
// it plain, so that its output can explain a failure.
func builderProgress(o Options) string {
	if o.ResolvedProgress() == ProgressTTY {
		return "tty"
	}
	return "plain"
}

func buildxArgv(o Options, builder string) []string {
	argv := []string{"docker", "buildx", "build", "--builder", builder,
		"--file", o.Dockerfile,
		"--platform", o.Platform,
		"--output", "type=oci,dest=" + o.Output,
		"--provenance=false",
		"--progress", builderProgress(o)}
	if o.Target != "" {
		argv = append(argv, "--target", o.Target)
	}
	args, _ := parseBuildArgs(o.BuildArgs, o.lookupEnv)
	for _, a := range args {
		if a.FromEnv {
			// buildx reads it from the environment it inherits, as
			// docker does: the value stays out of the command line.
			argv = append(argv, "--build-arg", a.Key)
		} else {
			argv = append(argv, "--build-arg", a.Key+"="+a.Value)
		}
	}
	argv = appendEach(argv, "--secret", o.Secrets)
	argv = appendEach(argv, "--ssh", o.SSH)
	ctxs, _ := parseBuildContexts(o.BuildContexts, o.Builder)
	for _, c := range ctxs {
		if c.Image != "" {
			argv = append(argv, "--build-context", c.Name+"="+dockerImageScheme+c.Image)
		} else {
			argv = append(argv, "--build-context", c.Name+"="+c.Path)
		}
	}
	argv = appendEach(argv, "--cache-from", o.CacheFrom)
	argv = appendEach(argv, "--cache-to", o.CacheTo)
	if o.Pull {
		argv = append(argv, "--pull")
	}
	if o.Network != "" && o.Network != "default" {
		argv = append(argv, "--network", o.Network)
	}
	argv = appendEach(argv, "--label", o.Labels)
	if o.NoCache {
		argv = append(argv, "--no-cache")
	}
	return append(argv, o.Context)
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
		"--progress", builderProgress(o),
		"--frontend", "dockerfile.v0",
		"--local", "context="+o.Context,
		"--local", "dockerfile="+filepath.Dir(o.Dockerfile),
		"--opt", "filename="+filepath.Base(o.Dockerfile),
		"--opt", "platform="+o.Platform,
	)
	if o.Target != "" {
		argv = append(argv, "--opt", "target="+o.Target)
	}
	args, _ := parseBuildArgs(o.BuildArgs, o.lookupEnv)
	for _, a := range args {
		argv = append(argv, "--opt", "build-arg:"+a.Key+"="+a.Value)
	}
	argv = appendEach(argv, "--secret", o.Secrets)
	argv = appendEach(argv, "--ssh", o.SSH)
	ctxs, _ := parseBuildContexts(o.BuildContexts, o.Builder)
	for _, c := range ctxs {
		if c.Image != "" {
			argv = append(argv, "--opt", "context:"+c.Name+"="+dockerImageScheme+c.Image)
		} else {
			argv = append(argv, "--local", c.Name+"="+c.Path, "--opt", "context:"+c.Name+"=local:"+c.Name)
		}
	}
	for _, c := range o.CacheFrom {
		argv = append(argv, "--import-cache", cacheSpec(c))
	}
	for _, c := range o.CacheTo {
		argv = append(argv, "--export-cache", cacheSpec(c))
	}
	if o.Pull {
		argv = append(argv, "--opt", "image-resolve-mode=pull")
	}
	if o.Network != "" && o.Network != "default" {
		argv = append(argv, "--opt", "force-network-mode="+o.Network)
		if o.Network == "host" {
			argv = append(argv, "--allow", "network.host")
		}
	}
	for _, l := range o.Labels {
		k, v, _ := strings.Cut(l, "=")
		argv = append(argv, "--opt", "label:"+k+"="+v)
	}
	if o.NoCache {
		argv = append(argv, "--no-cache")
	}
	return append(argv, "--output", "type=oci,dest="+o.Output)
}

// Build runs the build. The output archive is removed when the build fails
// or is cancelled. With docker buildx, the builder is created when it does
// not exist and kept afterwards (BuildKit's cache lives in it).
//
// Long: the builder's command line, the pseudo-terminal or terminal its
// output goes to, the kept tail of that output and the cleanup of the
// archive share the run's state; split, they would pass it all between
// pieces.
func Build(ctx context.Context, o Options) (err error) {
	if err := Validate(o); err != nil {
		return err
	}
	log := o.Log
	if log == nil {
		log = io.Discard
	}
	progress := o.ResolvedProgress()
	notes := log
	if progress == ProgressQuiet {
		notes = io.Discard
	}
	tool := "docker"
	if o.Builder == Buildctl {
		tool = "buildctl"
	}
	if _, lerr := exec.LookPath(tool); lerr != nil {
		return missingTool(o.Builder)
	}
	defer func() {
		if err != nil {
			os.Remove(o.Output)
		}
	}()
	builderFound := false
	for _, s := range Commands(o) {
		if err := ctx.Err(); err != nil {
			return err
		}
		switch s.Role {
		case RoleCheck:
			if out, rerr := capture(ctx, s.Argv); rerr != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return buildxUnusable(out, rerr)
			}
		case RoleFindBuilder:
			out, rerr := capture(ctx, s.Argv)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			switch {
			case rerr == nil:
				builderFound = true
			case noSuchBuilder(out):
			default:
				return stepError(o, s, rerr, out)
			}
		case RoleCreateBuilder:
			if builderFound {
				continue
			}
			name := o.buildxBuilder()
			fmt.Fprintf(notes, "docker2vm: creating the buildx builder %s (docker-container driver); it keeps BuildKit's cache between builds; remove it with: docker buildx rm %s\n", name, name)
			fmt.Fprintf(notes, "+ %s\n", shell.Join(s.Argv))
			out, rerr := capture(ctx, s.Argv)
			if rerr == nil {
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// Another run may have created it meanwhile: then use it.
			if _, ierr := capture(ctx, Commands(o)[1].Argv); ierr == nil {
				continue
			}
			return createError(o, s, rerr, out)
		case RoleBuild:
			fmt.Fprintf(notes, "+ %s\n", shell.Join(s.Argv))
			tail, rerr := runBuild(ctx, s.Argv, log, progress)
			if rerr != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return stepError(o, s, rerr, tail)
			}
		}
	}
	if st, serr := os.Stat(o.Output); serr != nil || st.Size() == 0 {
		return &hint.Error{Msg: fmt.Sprintf("%s finished but wrote no OCI archive at %s", tool, o.Output),
			Fixes: []string{"Check the build log above; the builder must support --output type=oci."}}
	}
	return nil
}

// capture runs a short command and returns its combined output.
func capture(ctx context.Context, argv []string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// runBuild runs the build command with its output on log as progress
// asks, never on stdout, and returns the end of that output (for the
// error message).
func runBuild(ctx context.Context, argv []string, log io.Writer, progress Progress) (string, error) {
	tail := &tailWriter{max: 16 << 10}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	switch progress {
	case ProgressQuiet:
		cmd.Stdout, cmd.Stderr = tail, tail
	case ProgressTTY:
		term := log.(*os.File) // Validate and ResolvedProgress made sure
		con, err := newConsole(term, tail)
		if err != nil {
			// The live view on the terminal itself; its output is not
			// kept, and the error message points at it.
			cmd.Stdout, cmd.Stderr = term, term
			return "", cmd.Run()
		}
		cmd.Stdout, cmd.Stderr = con.File(), con.File()
		if err := cmd.Start(); err != nil {
			con.Close()
			return "", err
		}
		con.Started()
		err = cmd.Wait()
		con.Close()
		return tail.String(), err
	default:
		// One writer for both streams: exec then copies them with a single
		// goroutine. Two writers sharing log raced (a bytes.Buffer lost the
		// build output entirely).
		w := io.MultiWriter(log, tail)
		cmd.Stdout, cmd.Stderr = w, w
	}
	err := cmd.Run()
	return tail.String(), err
}

// appendEach appends flag once for each of values: a repeated flag.
func appendEach(argv []string, flag string, values []string) []string {
	for _, v := range values {
		argv = append(argv, flag, v)
	}
	return argv
}

// tailWriter keeps the last max bytes written, to classify failures.
type tailWriter struct {
	max int
	buf []byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailWriter) String() string { return string(t.buf) }
