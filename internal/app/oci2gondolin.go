package app

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
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

// OCI2Gondolin is the oci2gondolin command.
func OCI2Gondolin() *cli.Command {
	flags := append([]cli.Flag{
		{Name: "image", Arg: "REF", Usage: "image reference in a registry"},
		{Name: "oci-layout", Arg: "PATH", Usage: "OCI image layout directory (PATH:REF selects an image)"},
		{Name: "oci-tar", Arg: "PATH", Usage: "OCI archive or docker-save archive"},
		{Name: "ref-name", Arg: "REF", Usage: "with --oci-layout/--oci-tar: the image's org.opencontainers.image.ref.name"},
	}, outputFlags...)
	flags = append(flags, cli.Flag{Name: "label", Arg: "NAME", Usage: "deprecated: use --fs-label"})
	return &cli.Command{Name: "oci2gondolin", Usage: ociUsage, Flags: flags, Examples: ociExamples, Env: converterEnv, Run: runOCI2Gondolin}
}

func runOCI2Gondolin(ctx context.Context, f *cli.Flags, stdout, stderr io.Writer) error {
	src, err := sourceFromFlags(f)
	if err != nil {
		return err
	}
	opts, err := baseOptions("oci2gondolin", f, stderr)
	if err != nil {
		return err
	}
	opts.Source = src
	opts.Image.RefName = f.Str("ref-name", "")
	plats, err := platforms(f)
	if err != nil {
		return err
	}
	return convertAndPrint(ctx, opts, plats, f.Bool("dry-run"), stdout)
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

// sourceFromFlags applies the "exactly one source" rule.
func sourceFromFlags(f *cli.Flags) (image.Source, error) {
	var given []string
	for _, n := range []string{"image", "oci-layout", "oci-tar"} {
		if f.Has(n) {
			given = append(given, "--"+n)
		}
	}
	switch {
	case len(given) == 0:
		return image.Source{}, &hint.Error{Msg: "Exactly one input source is required.",
			Fixes: []string{"Pass one of --image REF, --oci-layout PATH or --oci-tar PATH."}}
	case len(given) > 1:
		return image.Source{}, &hint.Error{Msg: "Input source flags are mutually exclusive.",
			Fixes: []string{"Pass only one of " + strings.Join(given, ", ") + "."}}
	}
	switch {
	case f.Has("image"):
		ref := strings.TrimSpace(f.Str("image", ""))
		if ref == "" {
			return image.Source{}, &hint.Error{Msg: "--image needs a reference.", Fixes: []string{"Write --image busybox:latest or --image REGISTRY/REPO:TAG."}}
		}
		if redacted, ok := withoutCredentials(ref); ok {
			return image.Source{}, &hint.Error{Msg: "--image " + redacted + " holds credentials (USER:PASSWORD@ before the registry): docker2vm does not take them on the command line, where they would be echoed and kept in shell history",
				Fixes: []string{"Log in once with `docker login REGISTRY` (docker2vm reads ~/.docker/config.json and its credential helpers), then pass --image without them."}}
		}
		return image.Source{Kind: image.KindRegistry, Ref: ref}, nil
	case f.Has("oci-layout"):
		p := f.Str("oci-layout", "")
		if p == "" {
			return image.Source{}, &hint.Error{Msg: "--oci-layout needs a path.", Fixes: []string{"Write --oci-layout PATH (a directory holding index.json and oci-layout)."}}
		}
		return image.Source{Kind: image.KindOCILayout, Ref: absPathRef(p)}, nil
	default:
		p := f.Str("oci-tar", "")
		if path, _ := image.SplitPathRef(p); !exists(path) {
			_, err := os.Stat(path)
			return image.Source{}, &hint.Error{Msg: "--oci-tar " + p + " cannot be read: " + errText(err),
				Fixes: []string{"Pass the path of an OCI archive or a docker save tarball."}}
		}
		return image.Source{Kind: image.KindOCIArchive, Ref: absPathRef(p)}, nil
	}
}

// withoutCredentials returns ref with the user information of its
// registry part (USER[:PASSWORD]@ in the first path segment, as in a URL)
// replaced by "***@", and whether there was any. A digest's "@" comes after
// the repository, so "busybox@sha256:..." has none.
func withoutCredentials(ref string) (string, bool) {
	scheme := ""
	if i := strings.Index(ref, "://"); i >= 0 {
		scheme, ref = ref[:i+3], ref[i+3:]
	}
	host, rest, hasSlash := strings.Cut(ref, "/")
	if !hasSlash {
		at := strings.Index(ref, "@")
		if at < 0 || digestPattern.MatchString(ref[at+1:]) {
			return scheme + ref, false
		}
		return scheme + "***@" + ref[at+1:], true
	}
	at := strings.LastIndex(host, "@")
	if at < 0 {
		return scheme + ref, false
	}
	return scheme + "***@" + host[at+1:] + "/" + rest, true
}

// digestPattern is an OCI digest (algorithm:encoded).
var digestPattern = regexp.MustCompile(`^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$`)

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

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func errText(err error) string {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err.Error()
	}
	return err.Error()
}
