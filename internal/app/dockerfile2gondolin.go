package app

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/docker2vm/docker2vm/buildkit"
	"github.com/docker2vm/docker2vm/convert"
	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/image"
	"github.com/docker2vm/docker2vm/internal/cli"
	"github.com/docker2vm/docker2vm/internal/console"
)

const dockerfileUsage = `dockerfile2gondolin builds a Dockerfile with BuildKit and converts the image into a Gondolin guest.

Usage:
  dockerfile2gondolin [flags] --out PATH [CONTEXT]
  dockerfile2gondolin -f Dockerfile -o out .

The build flags are those of docker buildx build, with their meaning; --file
defaults to CONTEXT/Dockerfile and the context to the current directory. As
with docker build, -f is --file, -t is --tag (Gondolin's image store) and
-o/--output is --out (the guest's directory).

Builders:
  docker-buildx  (default) docker buildx with the builder "docker2vm" (docker-container driver), created on
                 first use and kept, so BuildKit's cache survives between builds (remove it with
                 docker buildx rm docker2vm); or --buildx-builder NAME
  buildctl       a BuildKit daemon: --buildkit-addr ADDR, else BUILDKIT_HOST, else buildctl's default socket

Build progress goes to stderr (BuildKit's live view on a terminal); on success one JSON document is
printed on stdout. The temporary OCI archive is removed on success, failure and interruption.`

// dockerfileFlags are dockerfile2gondolin's flags: docker build's, then
// the shared flags.
type dockerfileFlags struct {
	commonFlags
	context, file, builder                                             cli.Optional
	target, network, buildxBuilder, buildkitAddr                       string
	tlsCACert, tlsCert, tlsKey, tlsServerName                          string
	buildArgs, secrets, ssh, buildContexts, cacheFrom, cacheTo, labels []string
	pull                                                               bool
}

// Dockerfile2Gondolin is the dockerfile2gondolin command.
func Dockerfile2Gondolin() *cli.Command {
	d := &dockerfileFlags{}
	env := append(append([]cli.EnvVar{}, converterEnv...), cli.EnvVar{Name: "BUILDKIT_HOST", Meaning: "buildctl: the BuildKit daemon's address when --buildkit-addr is not given"})
	return &cli.Command{Name: "dockerfile2gondolin", Usage: dockerfileUsage, Flags: d.flags(), Args: []string{"CONTEXT"},
		Examples: dockerfileExamples, Env: env, Run: d.run}
}

// flags binds d to dockerfile2gondolin's flags, in the order --help lists
// them: docker build's, then the shared ones with docker's spellings.
func (d *dockerfileFlags) flags() []cli.Flag {
	flags := []cli.Flag{
		cli.OptionalVar(&d.context, "context", "DIR", "the build context directory (default: the current directory); also the one argument, as with docker build"),
		cli.OptionalVar(&d.file, "file", "PATH", "the Dockerfile (default: CONTEXT/Dockerfile); it may live outside the context").WithShort("f"),
		cli.OptionalVar(&d.builder, "builder", "NAME", "docker-buildx (default) or buildctl").WithValues("docker-buildx", "buildctl"),
		cli.StringVar(&d.target, "target", "NAME", "build this stage of a multi-stage Dockerfile"),
		cli.ListVar(&d.buildArgs, "build-arg", "KEY[=VALUE]", "build argument; KEY alone takes the value from the environment (not passed when unset there)"),
		cli.ListVar(&d.secrets, "secret", "SPEC", "secret for RUN --mount=type=secret: id=NAME,src=PATH or id=NAME,env=VAR"),
		cli.ListVar(&d.ssh, "ssh", "SPEC", "ssh agent or keys for RUN --mount=type=ssh: default (SSH_AUTH_SOCK), or ID=SOCKET|KEY[,KEY]"),
		cli.ListVar(&d.buildContexts, "build-context", "NAME=PATH|docker-image://REF", "an extra named build context (FROM NAME, COPY --from=NAME): a local directory or an image"),
		cli.ListVar(&d.cacheFrom, "cache-from", "SPEC", "import BuildKit's cache: REF (a registry image) or type=registry|local|...,..."),
		cli.ListVar(&d.cacheTo, "cache-to", "SPEC", "export BuildKit's cache: REF or type=registry|local|inline|...,..."),
		cli.BoolVar(&d.pull, "pull", "always pull the base images, even when the builder has them"),
		cli.StringVar(&d.network, "network", "MODE", "network of RUN steps: default, none or host").WithValues("default", "none", "host"),
		cli.ListVar(&d.labels, "label", "KEY=VALUE", "image label (the ext4 filesystem label is --fs-label)"),
		cli.StringVar(&d.buildxBuilder, "buildx-builder", "NAME", "docker-buildx: the builder to use (default docker2vm), created (docker-container driver) if missing, never removed"),
		cli.StringVar(&d.buildkitAddr, "buildkit-addr", "ADDR", "buildctl: BuildKit address (unix:///path.sock, tcp://host:port); default BUILDKIT_HOST"),
		cli.StringVar(&d.tlsCACert, "tlscacert", "PATH", "buildctl: CA certificate for a tcp BuildKit"),
		cli.StringVar(&d.tlsCert, "tlscert", "PATH", "buildctl: client certificate for a tcp BuildKit"),
		cli.StringVar(&d.tlsKey, "tlskey", "PATH", "buildctl: client key for a tcp BuildKit"),
		cli.StringVar(&d.tlsServerName, "tlsservername", "NAME", "buildctl: server name to verify"),
	}
	for _, f := range d.commonFlags.flags() {
		switch f.Name {
		case "no-cache":
			f.Usage = "build every step again without BuildKit's cache, and neither read nor write docker2vm's blob, result and prefix caches"
		case "progress":
			f.Usage = "progress on stderr, the build's too: auto (default: BuildKit's live view on a terminal, else plain text), plain, tty, quiet, or json (one JSON object per line, for programs)"
		case "out":
			// docker build -o DIR writes the image's files to DIR: here, the guest.
			f.Short, f.Aliases = "o", []string{"output"}
		case "tag":
			f.Short = "t"
		}
		flags = append(flags, f)
	}
	return flags
}

// DryRunPlan is dockerfile2gondolin's --dry-run output.
type DryRunPlan struct {
	Command  string             `json:"command"`
	DryRun   bool               `json:"dryRun"`
	Source   convert.SourceInfo `json:"source"`
	Platform string             `json:"platform"`
	Mode     convert.Mode       `json:"mode"`
	OutDir   string             `json:"outDir"`
	Builder  buildkit.Builder   `json:"builder"`
	// BuildxBuilder is the docker buildx builder (docker-buildx only).
	BuildxBuilder string            `json:"buildxBuilder,omitempty"`
	Progress      buildkit.Progress `json:"progress"`
	Build         []buildkit.Step   `json:"build"`
	Steps         []convert.Step    `json:"steps"`
}

// Long: it reads docker build's flags (and their docker spellings) into the
// builder's options in --help's order, then checks, builds and converts.
func (d *dockerfileFlags) run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if out := d.out; strings.Contains(out, "type=") || strings.HasPrefix(out, "dest=") {
		return &hint.Error{Msg: fmt.Sprintf("--out %q is docker build's --output syntax.", out),
			Fixes: []string{"dockerfile2gondolin writes a Gondolin guest into a directory: pass --out DIR (or -o DIR)."}}
	}
	if d.out == "" {
		return &hint.Error{Msg: "Missing required flag --out.", Fixes: []string{"Pass --out PATH: the directory to write the guest into."}}
	}
	ctxArg := d.context.Or(".")
	if len(args) == 1 {
		if d.context.Set {
			return &hint.Error{Msg: fmt.Sprintf("The build context is given twice: %q and --context %q.", args[0], d.context.Value),
				Fixes: []string{"Pass the context once: as the argument (as docker build takes it) or with --context."}}
		}
		if args[0] == "-" || strings.Contains(args[0], "://") {
			return &hint.Error{Msg: fmt.Sprintf("Build context %q: only a local directory is supported.", args[0]),
				Fixes: []string{"Pass a directory (e.g. .); a Dockerfile from stdin is --file -."}}
		}
		ctxArg = args[0]
	}
	for _, p := range []struct {
		name string
		v    cli.Optional
	}{{"context", d.context}, {"file", d.file}} {
		if p.v.Set && p.v.Value == "" {
			return &hint.Error{Msg: fmt.Sprintf("--%s needs a path.", p.name), Fixes: []string{fmt.Sprintf("Write --%s PATH, or leave --%s out for its default.", p.name, p.name)}}
		}
	}
	opts, err := d.baseOptions("dockerfile2gondolin", stderr)
	if err != nil {
		return err
	}
	plats, err := d.platforms()
	if err != nil {
		return err
	}
	platList := make([]string, len(plats))
	for i, p := range plats {
		platList[i] = p.String()
	}
	contextDir, err := filepath.Abs(ctxArg)
	if err != nil {
		return fmt.Errorf("resolving --context: %w", err)
	}
	dockerfile := filepath.Join(contextDir, "Dockerfile")
	if d.file.Set {
		if dockerfile = d.file.Value; dockerfile != "-" {
			if dockerfile, err = filepath.Abs(dockerfile); err != nil {
				return fmt.Errorf("resolving --file: %w", err)
			}
		}
	}
	builder := buildkit.Builder(strings.ToLower(d.builder.Or(string(buildkit.DockerBuildx))))
	addr := d.buildkitAddr
	if addr == "" && builder == buildkit.Buildctl {
		addr = os.Getenv("BUILDKIT_HOST")
	}
	mode, err := d.progressMode(stderr)
	if err != nil {
		return err
	}
	progress, buildLog := buildkit.Progress(mode), stderr
	if con, ok := opts.Progress.(*console.Console); ok && con.JSON() {
		// The builder's plain log, each line an event of type "build".
		progress, buildLog = buildkit.ProgressPlain, con.Kind("build")
	}
	bo := buildkit.Options{
		Builder:       builder,
		Dockerfile:    dockerfile,
		Context:       contextDir,
		Platform:      strings.Join(platList, ","),
		Target:        d.target,
		BuildArgs:     d.buildArgs,
		Secrets:       d.secrets,
		SSH:           d.ssh,
		BuildContexts: d.buildContexts,
		CacheFrom:     d.cacheFrom,
		CacheTo:       d.cacheTo,
		Pull:          d.pull,
		Network:       strings.ToLower(d.network),
		Labels:        d.labels,
		NoCache:       d.noCache,
		Progress:      progress,
		Addr:          addr,
		TLSCACert:     d.tlsCACert,
		TLSCert:       d.tlsCert,
		TLSKey:        d.tlsKey,
		TLSServerName: d.tlsServerName,
		BuildxBuilder: d.buildxBuilder,
		Log:           buildLog,
	}
	if mode != "quiet" {
		for _, l := range bo.Labels {
			if !strings.Contains(l, "=") {
				// Before --fs-label, --label NAME was the filesystem label.
				fmt.Fprintf(opts.Progress, "note: --label %s sets an image label %s=\"\" (as docker build does); the ext4 filesystem label is --fs-label\n", l, l)
			}
		}
	}
	origin := &convert.SourceInfo{Kind: "dockerfile", Path: dockerfile, Context: contextDir}
	opts.Origin = origin
	// Bad input is refused before anything runs or a temporary directory
	// is made, by a dry run too: the build's own flags first, then what
	// the conversion would refuse (which may ask Gondolin's image registry
	// whether it has a base to download).
	if err := buildkit.Validate(bo); err != nil {
		return err
	}
	if err := convert.Check(ctx, opts, plats); err != nil {
		return err
	}
	if d.dryRun {
		bo.Output = filepath.Join(os.TempDir(), "docker2vm-build-XXXXXX", "image.tar")
		plan := DryRunPlan{
			Command: "dockerfile2gondolin", DryRun: true, Source: *origin,
			Platform: bo.Platform, Mode: opts.Mode, OutDir: opts.OutDir,
			Builder: builder, BuildxBuilder: buildxBuilderName(bo), Progress: bo.ResolvedProgress(), Build: buildkit.Commands(bo),
			Steps: []convert.Step{
				{ID: "build", Stage: "build", Description: fmt.Sprintf("build %s with %s into a temporary OCI archive", dockerfile, builder)},
				{ID: "convert", Stage: "convert", Description: "convert the archive as oci2gondolin --oci-tar would (" + string(opts.Mode) + " mode)"},
				{ID: "cleanup", Stage: "build", Description: "remove the temporary OCI archive"},
			},
		}
		return cli.PrintJSON(stdout, plan)
	}
	tmp, err := os.MkdirTemp("", "docker2vm-build-")
	if err != nil {
		return fmt.Errorf("creating a temporary directory for the build: %w", err)
	}
	defer os.RemoveAll(tmp)
	bo.Output = filepath.Join(tmp, "image.tar")
	if err := buildkit.Build(ctx, bo); err != nil {
		return err
	}
	opts.Source = image.Source{Kind: image.KindOCIArchive, Ref: bo.Output}
	return convertAndPrint(ctx, opts, plats, false, stdout)
}

func buildxBuilderName(o buildkit.Options) string {
	if o.Builder != buildkit.DockerBuildx {
		return ""
	}
	if o.BuildxBuilder != "" {
		return o.BuildxBuilder
	}
	return buildkit.DefaultBuildxBuilder
}
