package app

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"

	"github.com/docker2vm/docker2vm/convert"
	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/image"
	"github.com/docker2vm/docker2vm/internal/cli"
	"github.com/docker2vm/docker2vm/internal/shell"
)

const ociUsage = `oci2gondolin converts an OCI or Docker image into a Gondolin guest.

Usage:
  oci2gondolin (--image REF | --oci-layout PATH[:REF] | --oci-tar PATH) --out PATH [flags]

Sources (exactly one):
  --image REF         an image in a registry (docker.io/library/busybox:latest, 127.0.0.1:5000/app@sha256:...)
                      credentials come from the Docker config and its credential helpers
  --oci-layout PATH   an OCI image layout directory; PATH:REF or --ref-name selects an image by its
                      org.opencontainers.image.ref.name annotation when the layout holds several
  --oci-tar PATH      an OCI archive (plain, gzip or zstd) or a "docker save" archive

On success one JSON document describing the result is printed on stdout;
progress and errors go to stderr. Exit status 0 on success, 1 on any failure.`

// ociFlags are oci2gondolin's flags: a source of each kind, --ref-name,
// the shared flags, and the deprecated --label.
type ociFlags struct {
	commonFlags
	sources []cli.Optional // one per image.Kinds(), in its order
	refName string
}

// OCI2Gondolin is the oci2gondolin command.
func OCI2Gondolin() *cli.Command {
	o := &ociFlags{}
	return &cli.Command{Name: "oci2gondolin", Usage: ociUsage, Flags: o.flags(), Examples: ociExamples, Env: converterEnv, Run: o.run}
}

// flags binds o to oci2gondolin's flags, in the order --help lists them.
func (o *ociFlags) flags() []cli.Flag {
	var flags []cli.Flag
	kinds := image.Kinds()
	o.sources = make([]cli.Optional, len(kinds))
	for i, k := range kinds {
		flags = append(flags, cli.OptionalVar(&o.sources[i], k.Flag, k.Arg, k.Usage))
	}
	flags = append(flags, cli.StringVar(&o.refName, "ref-name", "REF", "with --oci-layout/--oci-tar: the image's org.opencontainers.image.ref.name"))
	flags = append(flags, o.commonFlags.flags()...)
	return append(flags, cli.OptionalVar(&o.deprecatedLabel, "label", "NAME", "deprecated: use --fs-label"))
}

func (o *ociFlags) run(ctx context.Context, _ []string, stdout, stderr io.Writer) error {
	src, err := o.source()
	if err != nil {
		return err
	}
	opts, err := o.baseOptions("oci2gondolin", stderr)
	if err != nil {
		return err
	}
	opts.Source = src
	opts.Image.RefName = o.refName
	plats, err := o.platforms()
	if err != nil {
		return err
	}
	return convertAndPrint(ctx, opts, plats, o.dryRun, stdout)
}

// convertAndPrint converts for one platform (the output is OUT itself) or
// several (OUT/<os>_<arch>/ each), prints the result or the plan, and
// says on opts.Progress how to boot what it wrote.
func convertAndPrint(ctx context.Context, opts convert.Options, plats []image.Platform, dryRun bool, stdout io.Writer) error {
	defer paceGC()()
	if len(plats) > 1 {
		if dryRun {
			plan, err := convert.PlanPlatforms(ctx, opts, plats)
			if err != nil {
				return err
			}
			return cli.PrintJSON(stdout, plan)
		}
		res, err := convert.RunPlatforms(ctx, opts, plats)
		if err != nil {
			return err
		}
		sayHowToBootAll(opts, res.Platforms)
		return cli.PrintJSON(stdout, res)
	}
	if dryRun {
		plan, err := convert.PlanConversion(ctx, opts)
		if err != nil {
			return err
		}
		return cli.PrintJSON(stdout, plan)
	}
	res, err := convert.Run(ctx, opts)
	if err != nil {
		return err
	}
	sayHowToBoot(opts, res)
	return cli.PrintJSON(stdout, res)
}

// sayHowToBoot writes one line on how to boot the output of res.
func sayHowToBoot(opts convert.Options, res *convert.Result) {
	if opts.Progress == nil || opts.Plain {
		return // a plain tree does not boot by itself
	}
	if line := howToBoot(res); line != "" {
		fmt.Fprintln(opts.Progress, line)
	}
}

// sayHowToBootAll is sayHowToBoot for several platforms' outputs: one
// line when they boot the same way (a --tag, which Gondolin resolves to
// the host's architecture), else one per platform, named.
func sayHowToBootAll(opts convert.Options, res []*convert.Result) {
	if opts.Progress == nil || opts.Plain {
		return
	}
	var lines []string
	for _, r := range res {
		lines = append(lines, howToBoot(r))
	}
	if len(slices.Compact(slices.Clone(lines))) == 1 {
		fmt.Fprintln(opts.Progress, lines[0])
		return
	}
	for i, r := range res {
		fmt.Fprintf(opts.Progress, "[%s] %s\n", r.Platform, lines[i])
	}
}

// howToBoot is the gondolin command and SDK option that boot res.
func howToBoot(res *convert.Result) string {
	if res.Mode != convert.ModeAssets {
		return fmt.Sprintf("Boot it with a Gondolin base's kernel for %s: VM.create({ sandbox: { rootDiskPath: %q, rootDiskFormat: \"raw\" } }) (or convert with --mode assets for a guest directory)",
			res.Platform, res.RootfsPath)
	}
	image := res.OutDir
	if res.Imported != nil {
		image = res.Imported.Tag
	}
	return fmt.Sprintf("Boot it: gondolin bash --image %s (SDK: VM.create({ sandbox: { imagePath: %q } }); the image's ENTRYPOINT/CMD: %s)",
		shell.Word(image), image, "/usr/bin/docker2vm-entrypoint")
}

// source applies the "exactly one source" rule.
func (o *ociFlags) source() (image.Source, error) {
	var given []int
	var choices []string
	kinds := image.Kinds()
	for i, k := range kinds {
		choices = append(choices, "--"+k.Flag+" "+k.Arg)
		if o.sources[i].Set {
			given = append(given, i)
		}
	}
	switch len(given) {
	case 0:
		return image.Source{}, &hint.Error{Msg: "Exactly one input source is required.",
			Fixes: []string{"Pass one of " + strings.Join(choices[:len(choices)-1], ", ") + " or " + choices[len(choices)-1] + "."}}
	case 1:
	default:
		var names []string
		for _, i := range given {
			names = append(names, "--"+kinds[i].Flag)
		}
		return image.Source{}, &hint.Error{Msg: "Input source flags are mutually exclusive.",
			Fixes: []string{"Pass only one of " + strings.Join(names, ", ") + "."}}
	}
	k, ref := kinds[given[0]], o.sources[given[0]].Value
	if !k.Path {
		ref = strings.TrimSpace(ref)
	}
	if k.Check != nil {
		if err := k.Check(ref); err != nil {
			return image.Source{}, err
		}
	}
	if k.Path {
		ref = absPathRef(ref)
	}
	return image.Source{Kind: k.Kind, Ref: ref}, nil
}

// absPathRef makes the path of PATH[:REF] absolute, so that meta.json and
// the result name the source wherever they are read from.
func absPathRef(s string) string {
	p, ref := image.SplitPathRef(s)
	abs, err := filepath.Abs(p)
	if err != nil {
		return s
	}
	if ref != "" {
		return abs + ":" + ref
	}
	return abs
}
