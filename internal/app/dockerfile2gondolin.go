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
	"github.com/docker2vm/docker2vm/image"
	"github.com/docker2vm/docker2vm/internal/cli"
)

const dockerfileUsage = `dockerfile2gondolin builds a Dockerfile with BuildKit and converts the image into a Gondolin guest.

Usage:
  dockerfile2gondolin --file PATH --context PATH --out PATH [flags]

Builders:
  docker-buildx  (default) docker buildx with a throwaway docker-container builder, or --buildx-builder NAME
  buildctl       a BuildKit daemon: --buildkit-addr ADDR, else BUILDKIT_HOST, else buildctl's default socket

Build logs go to stderr; on success one JSON document is printed on stdout.
The temporary OCI archive is removed on success, failure and interruption.`

// Dockerfile2Gondolin is the dockerfile2gondolin command.
func Dockerfile2Gondolin() *cli.Command {
	flags := append([]cli.Flag{
		{Name: "file", Arg: "PATH", Usage: "the Dockerfile (required)"},
		{Name: "context", Arg: "PATH", Usage: "the build context directory (required)"},
		{Name: "builder", Arg: "NAME", Usage: "docker-buildx (default) or buildctl"},
		{Name: "target", Arg: "NAME", Usage: "build this stage of a multi-stage Dockerfile"},
		{Name: "build-arg", Kind: cli.Repeat, Arg: "KEY=VALUE", Usage: "build argument (repeatable)"},
		{Name: "secret", Kind: cli.Repeat, Arg: "SPEC", Usage: "BuildKit secret, e.g. id=npmrc,src=$HOME/.npmrc (repeatable)"},
		{Name: "buildkit-addr", Arg: "ADDR", Usage: "buildctl: BuildKit address (unix:///path.sock, tcp://host:port); default BUILDKIT_HOST"},
		{Name: "tlscacert", Arg: "PATH", Usage: "buildctl: CA certificate for a tcp BuildKit"},
		{Name: "tlscert", Arg: "PATH", Usage: "buildctl: client certificate for a tcp BuildKit"},
		{Name: "tlskey", Arg: "PATH", Usage: "buildctl: client key for a tcp BuildKit"},
		{Name: "tlsservername", Arg: "NAME", Usage: "buildctl: server name to verify"},
		{Name: "buildx-builder", Arg: "NAME", Usage: "docker-buildx: reuse this existing builder instead of a throwaway one"},
	}, outputFlags...)
	return &cli.Command{Name: "dockerfile2gondolin", Usage: dockerfileUsage, Flags: flags, Run: runDockerfile2Gondolin}
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
	Build    []buildkit.Step    `json:"build"`
	Steps    []convert.Step     `json:"steps"`
}

func runDockerfile2Gondolin(ctx context.Context, f *cli.Flags, stdout, stderr io.Writer) error {
	for _, req := range []string{"file", "context", "out"} {
		if f.Str(req, "") == "" {
			return &cli.Error{Msg: fmt.Sprintf("Missing required flag --%s.", req),
				Fixes: []string{"dockerfile2gondolin needs --file PATH, --context PATH and --out PATH."}}
		}
	}
	opts, err := baseOptions("dockerfile2gondolin", f, stderr)
	if err != nil {
		return err
	}
	plats, err := platforms(f)
	if err != nil {
		return err
	}
	platList := make([]string, len(plats))
	for i, p := range plats {
		platList[i] = p.String()
	}
	dockerfile, _ := filepath.Abs(f.Str("file", ""))
	contextDir, _ := filepath.Abs(f.Str("context", ""))
	builder := buildkit.Builder(strings.ToLower(f.Str("builder", string(buildkit.DockerBuildx))))
	addr := f.Str("buildkit-addr", "")
	if addr == "" && builder == buildkit.Buildctl {
		addr = os.Getenv("BUILDKIT_HOST")
	}
	bo := buildkit.Options{
		Builder:       builder,
		Dockerfile:    dockerfile,
		Context:       contextDir,
		Platform:      strings.Join(platList, ","),
		Target:        f.Str("target", ""),
		BuildArgs:     f.List("build-arg"),
		Secrets:       f.List("secret"),
		Addr:          addr,
		TLSCACert:     f.Str("tlscacert", ""),
		TLSCert:       f.Str("tlscert", ""),
		TLSKey:        f.Str("tlskey", ""),
		TLSServerName: f.Str("tlsservername", ""),
		BuildxBuilder: f.Str("buildx-builder", ""),
		Log:           stderr,
	}
	if f.Bool("quiet") {
		bo.Log = io.Discard
	}
	origin := &convert.SourceInfo{Kind: "dockerfile", Path: dockerfile, Context: contextDir}
	opts.Origin = origin
	if f.Bool("dry-run") {
		bo.Output = filepath.Join(os.TempDir(), "docker2vm-build-XXXXXX", "image.tar")
		if err := buildkit.Validate(bo); err != nil {
			return err
		}
		plan := DryRunPlan{
			Command: "dockerfile2gondolin", DryRun: true, Source: *origin,
			Platform: bo.Platform, Mode: opts.Mode, OutDir: opts.OutDir,
			Builder: builder, Build: buildkit.Commands(bo, "docker2vm-XXXXXXXXXXXX"),
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
