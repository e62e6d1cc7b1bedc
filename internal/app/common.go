// Package app defines the two commands, oci2gondolin and
// dockerfile2gondolin: their flags, how flags become convert options, and
// what they print.
package app

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/docker2vm/docker2vm/convert"
	"github.com/docker2vm/docker2vm/gondolin"
	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/image"
	"github.com/docker2vm/docker2vm/internal/cachedir"
	"github.com/docker2vm/docker2vm/internal/cli"
	"github.com/docker2vm/docker2vm/internal/console"
)

// outputFlags are shared by both commands: target, output and filesystem.
var outputFlags = []cli.Flag{
	{Name: "out", Arg: "PATH", Usage: "output directory (required); replaced atomically, only if new, empty or an earlier docker2vm output holding only files docker2vm wrote"},
	{Name: "force", Kind: cli.Bool, Usage: "replace --out even when it holds other files (never a directory that holds the working directory, a source, base, cache or temporary directory, nor a mount point or shared directory)"},
	{Name: "platform", Arg: "OS/ARCH[,...]", Values: []string{"linux/amd64", "linux/arm64", "linux/amd64,linux/arm64"}, Usage: "target platform: linux/amd64, linux/arm64, or both comma-separated (then OUT/linux_amd64/ and OUT/linux_arm64/); default: the host's"},
	{Name: "mode", Arg: "MODE", Values: []string{"rootfs", "assets"}, Usage: "rootfs (rootfs.ext4 + meta.json) or assets (a full Gondolin guest directory); default rootfs"},
	{Name: "dry-run", Kind: cli.Bool, Usage: "resolve the image and print the plan as JSON; write nothing"},
	{Name: "base", Kind: cli.Repeat, Arg: "DIR", Usage: "Gondolin base bundle (kernel, initramfs, rootfs.ext4 with the runtime glue) for the target arch; repeat it, one per arch, for several platforms; default: GONDOLIN_GUEST_DIR, Gondolin's image store, then a download"},
	{Name: "no-download", Kind: cli.Bool, Usage: "never download a Gondolin base bundle"},
	{Name: "plain", Kind: cli.Bool, Usage: "rootfs mode only: write the image tree alone, without Gondolin's runtime glue"},
	{Name: "rootfs-mode", Arg: "MODE", Values: []string{"cow", "memory", "readonly"}, Usage: "assets mode: Gondolin's default rootfs mode in manifest.json: cow (default), memory or readonly"},
	{Name: "tag", Arg: "NAME:TAG", Usage: "assets mode: also import the guest into Gondolin's image store under this tag"},
	{Name: "publish", Arg: "DIR", Usage: "assets mode, with --tag: also add the guest to the Gondolin image registry in DIR (builtin-image-registry.json and builds/), to serve over HTTP"},
	{Name: "publish-url", Arg: "URL", Usage: "with --publish: the URL DIR is served at, for absolute archive URLs (default: relative to the document)"},
	{Name: "progress", Arg: "MODE", Values: cli.ProgressModes, Usage: "progress on stderr: auto (default: tty on a terminal, else plain), plain, tty, quiet, or json (one JSON object per line, for programs)"},
	{Name: "quiet", Kind: cli.Bool, Usage: "no progress on stderr (--progress quiet)"},
	{Name: "cache-dir", Arg: "DIR", Usage: "blob and result cache directory (default $XDG_CACHE_HOME/docker2vm, else ~/.cache/docker2vm)"},
	{Name: "no-cache", Kind: cli.Bool, Usage: "neither read nor write the blob and result caches"},
	{Name: "cache-max", Arg: "SIZE", Usage: "after a run, trim the cache directory to this size, least recently used first (default 10G, or $DOCKER2VM_CACHE_MAX; none: no limit)"},
	{Name: "insecure-registry", Kind: cli.Repeat, Arg: "HOST[:PORT]", Usage: "reach this registry over plain HTTP (repeatable; loopback registries always are)"},
	{Name: "stall-timeout", Arg: "DURATION", Usage: "give up a registry request that receives nothing for this long, e.g. 90s or 5m, and retry it (default $DOCKER2VM_STALL_TIMEOUT, else 60s)"},
	{Name: "parallel-downloads", Arg: "N", Usage: "run up to N downloads from a registry at once (layers, and Range segments of large layers), in layer order, while the layers before them are applied (default $DOCKER2VM_PARALLEL_DOWNLOADS, else 6; 1: one layer at a time, each in one request)"},
	{Name: "size", Arg: "BYTES", Usage: "exact rootfs.ext4 size, e.g. 2G (default: space used plus headroom)"},
	{Name: "headroom", Arg: "BYTES", Usage: "free space added for the guest when --size is not given, e.g. 512M"},
	{Name: "no-journal", Kind: cli.Bool, Usage: "write ext4 without a journal"},
	{Name: "fs-label", Arg: "NAME", Usage: "ext4 filesystem label of rootfs.ext4 (default gondolin-root)"},
	{Name: "max-bytes", Arg: "BYTES", Usage: "refuse images whose layers hold more file data than this (default 64G)"},
	{Name: "max-layers", Arg: "N", Usage: "refuse images with more layers than this, before downloading any (default 1000)"},
	{Name: "max-entries", Arg: "N", Usage: "refuse images whose layers hold more entries than this (default 10000000)"},
	{Name: "max-path", Arg: "N", Usage: "refuse entry names longer than this many bytes (default 4096)"},
}

// parseMode reads --mode (case-insensitive).
func parseMode(f *cli.Flags) (convert.Mode, error) {
	switch m := strings.ToLower(f.Str("mode", "rootfs")); m {
	case "rootfs":
		return convert.ModeRootfs, nil
	case "assets":
		return convert.ModeAssets, nil
	default:
		return "", &hint.Error{Msg: fmt.Sprintf("Invalid --mode %q.", f.Str("mode", "")),
			Fixes: []string{"Use --mode rootfs or --mode assets."}}
	}
}

// platforms reads --platform: one platform or a comma-separated list; the
// host's when not given.
func platforms(f *cli.Flags) ([]image.Platform, error) {
	if !f.Has("platform") {
		return []image.Platform{image.HostPlatform()}, nil
	}
	return image.ParsePlatforms(f.Str("platform", ""))
}

// baseOptions turns the shared flags into convert options; the platform
// is the first of --platform's (see platforms).
func baseOptions(command string, f *cli.Flags, stderr io.Writer) (convert.Options, error) {
	opts := convert.Options{Command: command, Progress: io.Discard}
	con, err := progressConsole(f, stderr)
	if err != nil {
		return opts, err
	}
	if con != nil {
		opts.Progress = con
	}
	// Each group of flags in its own function, in the order --help lists
	// them; the first error wins.
	for _, bind := range []func(*convert.Options, *cli.Flags) error{bindOutput, bindImage, bindFS, bindLimits} {
		if err := bind(&opts, f); err != nil {
			return opts, err
		}
	}
	if con != nil {
		opts.Image.Progress = con
	}
	return opts, nil
}

// progressConsole is the console that owns stderr for the run (every line
// goes above the download bars it draws), or nil for --progress quiet.
func progressConsole(f *cli.Flags, stderr io.Writer) (*console.Console, error) {
	mode, err := cli.ProgressMode(f, stderr)
	if err != nil {
		return nil, err
	}
	switch mode {
	case "quiet":
		return nil, nil
	case "json":
		return console.NewJSON(stderr), nil
	}
	return console.New(stderr, mode != "tty"), nil
}

// bindOutput reads what to write and where: --out, --force, --mode,
// --base, --plain, --tag, --publish, --rootfs-mode.
func bindOutput(opts *convert.Options, f *cli.Flags) error {
	out := f.Str("out", "")
	if out == "" {
		return &hint.Error{Msg: "Missing required flag --out.", Fixes: []string{"Pass --out PATH: the directory to write the result into."}}
	}
	opts.OutDir = out
	opts.Force = f.Bool("force")
	mode, err := parseMode(f)
	if err != nil {
		return err
	}
	opts.Mode = mode
	opts.Base = gondolin.BaseOptions{Dirs: f.List("base"), NoDownload: f.Bool("no-download")}
	opts.Plain = f.Bool("plain")
	opts.Tag = f.Str("tag", "")
	if opts.Publish = f.Str("publish", ""); opts.Publish != "" {
		if opts.Publish, err = filepath.Abs(opts.Publish); err != nil {
			return err
		}
	}
	opts.PublishURL = f.Str("publish-url", "")
	if f.Has("rootfs-mode") {
		if mode != convert.ModeAssets {
			return &hint.Error{Msg: "--rootfs-mode needs --mode assets", Fixes: []string{"Add --mode assets, or drop --rootfs-mode."}}
		}
		if opts.RootfsMode, err = gondolin.ParseRootfsMode(f.Str("rootfs-mode", "")); err != nil {
			return err
		}
	}
	return nil
}

// bindImage reads how the image is fetched: the first --platform, the
// cache, the network's limits, --max-layers.
func bindImage(opts *convert.Options, f *cli.Flags) error {
	plats, err := platforms(f)
	if err != nil {
		return err
	}
	opts.Image = image.Options{
		Platform:           plats[0],
		CacheDir:           cacheDir(f),
		NoCache:            f.Bool("no-cache"),
		InsecureRegistries: f.List("insecure-registry"),
	}
	if opts.CacheMax, err = cacheMax(f.Str("cache-max", "")); err != nil {
		return err
	}
	if f.Has("stall-timeout") {
		v := f.Str("stall-timeout", "")
		if opts.Image.StallTimeout, err = image.ParseStallTimeout(v); err != nil {
			return &hint.Error{Msg: fmt.Sprintf("Invalid duration for --stall-timeout: %q.", v),
				Fixes: []string{"Give a duration such as --stall-timeout 90s or --stall-timeout 5m."}}
		}
	}
	if f.Has("parallel-downloads") {
		v := f.Str("parallel-downloads", "")
		if opts.Image.ParallelDownloads, err = image.ParseParallelDownloads(v); err != nil {
			return &hint.Error{Msg: fmt.Sprintf("Invalid --parallel-downloads %q.", v),
				Fixes: []string{"Give a number from 1 (one download at a time) to 32, e.g. --parallel-downloads 8."}}
		}
	}
	if f.Has("max-layers") {
		n, err := cli.ParseCount("max-layers", f.Str("max-layers", ""))
		if err != nil {
			return err
		}
		opts.Image.MaxLayers = int(n)
	}
	return nil
}

// bindFS reads the file system's flags: --size, --headroom, --no-journal,
// --fs-label (and oci2gondolin's deprecated --label), SOURCE_DATE_EPOCH.
func bindFS(opts *convert.Options, f *cli.Flags) error {
	var err error
	if f.Has("size") {
		if opts.FS.Size, err = cli.ParseSize("size", f.Str("size", "")); err != nil {
			return err
		}
	}
	if f.Has("headroom") {
		if opts.FS.Headroom, err = cli.ParseSize("headroom", f.Str("headroom", "")); err != nil {
			return err
		}
	}
	opts.FS.NoJournal = f.Bool("no-journal")
	opts.FS.Label = f.Str("fs-label", "")
	// oci2gondolin's --label was the filesystem label; it still is, for
	// one release. (dockerfile2gondolin's --label is an image label, as
	// in docker build.)
	if opts.Command == "oci2gondolin" && f.Has("label") {
		if f.Has("fs-label") {
			return &hint.Error{Msg: "--label and --fs-label are both given.", Fixes: []string{"Pass only --fs-label NAME (--label is its deprecated name)."}}
		}
		fmt.Fprintln(opts.Progress, "warning: --label is deprecated: use --fs-label")
		opts.FS.Label = f.Str("label", "")
	}
	if len(opts.FS.Label) > 16 {
		return &hint.Error{Msg: fmt.Sprintf("Filesystem label %q is longer than 16 bytes.", opts.FS.Label),
			Fixes: []string{"ext4 labels hold at most 16 bytes: pass a shorter --fs-label."}}
	}
	opts.FS.SourceDateEpoch, err = sourceDateEpoch()
	return err
}

// bindLimits reads the limits on what an image may hold: --max-bytes,
// --max-entries, --max-path.
func bindLimits(opts *convert.Options, f *cli.Flags) error {
	var err error
	if f.Has("max-bytes") {
		if opts.Limits.MaxBytes, err = cli.ParseSize("max-bytes", f.Str("max-bytes", "")); err != nil {
			return err
		}
	}
	for _, c := range []struct {
		flag string
		dst  *int
	}{{"max-entries", &opts.Limits.MaxEntries}, {"max-path", &opts.Limits.MaxPathLen}} {
		if f.Has(c.flag) {
			n, err := cli.ParseCount(c.flag, f.Str(c.flag, ""))
			if err != nil {
				return err
			}
			*c.dst = int(n)
		}
	}
	return nil
}

// cacheDir is --cache-dir, made absolute (it is reported and locked).
func cacheDir(f *cli.Flags) string {
	d := f.Str("cache-dir", "")
	if d == "" {
		return ""
	}
	if abs, err := filepath.Abs(d); err == nil {
		return abs
	}
	return d
}

// cacheMax reads flag (--cache-max's value, "" when not given), else
// DOCKER2VM_CACHE_MAX: a size, or "none" (-1: no limit); 0 when neither is
// set (the default).
func cacheMax(flag string) (int64, error) {
	v, from := flag, "--cache-max"
	if v == "" {
		v, from = os.Getenv(cachedir.MaxEnv), cachedir.MaxEnv
	}
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "":
		return 0, nil
	case "none", "unlimited":
		return -1, nil
	}
	n, err := cli.ParseSize("cache-max", v)
	if err != nil {
		if from != "--cache-max" {
			return 0, &hint.Error{Msg: fmt.Sprintf("Invalid %s %q.", from, v),
				Fixes: []string{"Set " + from + " to a size such as 5G, or none for no limit."}}
		}
		return 0, err
	}
	if n == 0 {
		return 0, &hint.Error{Msg: fmt.Sprintf("%s 0 would empty the cache after every run.", from),
			Fixes: []string{"Pass --no-cache to use no cache, or a size such as 5G, or none for no limit."}}
	}
	return n, nil
}

// sourceDateEpoch reads SOURCE_DATE_EPOCH, the reproducible-builds time
// for anything the image does not date itself (0 when unset).
func sourceDateEpoch() (int64, error) {
	v := strings.TrimSpace(os.Getenv("SOURCE_DATE_EPOCH"))
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, &hint.Error{Msg: fmt.Sprintf("Invalid SOURCE_DATE_EPOCH %q.", v),
			Fixes: []string{"Set SOURCE_DATE_EPOCH to a Unix time in seconds, or unset it."}}
	}
	return n, nil
}
