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

// commonFlags are the flags both converters take: target, output, image,
// file system and limits. They are bound here once, and each command adds
// its own.
type commonFlags struct {
	out, tag, publish, publishURL, progress, cacheDir, cacheMax string
	force, dryRun, noDownload, plain, quiet, noCache, noJournal bool
	base, insecureRegistries                                    []string

	platform, mode, rootfsMode, stallTimeout, parallelDownloads       cli.Optional
	size, headroom, fsLabel, maxBytes, maxLayers, maxEntries, maxPath cli.Optional
	// deprecatedLabel is oci2gondolin's --label, the filesystem label
	// before --fs-label. Only that command binds it: dockerfile2gondolin's
	// --label is an image label, as in docker build.
	deprecatedLabel cli.Optional
}

// flags binds c to the shared flags, in the order --help lists them.
func (c *commonFlags) flags() []cli.Flag {
	return []cli.Flag{
		cli.StringVar(&c.out, "out", "PATH", "output directory (required); replaced atomically, only if new, empty or an earlier docker2vm output holding only files docker2vm wrote"),
		cli.BoolVar(&c.force, "force", "replace --out even when it holds other files (never a directory that holds the working directory, a source, base, cache or temporary directory, nor a mount point or shared directory)"),
		cli.OptionalVar(&c.platform, "platform", "OS/ARCH[,...]", "target platform: linux/amd64, linux/arm64, or both comma-separated (then OUT/linux_amd64/ and OUT/linux_arm64/); default: the host's").
			WithValues("linux/amd64", "linux/arm64", "linux/amd64,linux/arm64"),
		cli.OptionalVar(&c.mode, "mode", "MODE", "rootfs (rootfs.ext4 + meta.json) or assets (a full Gondolin guest directory); default rootfs").WithValues("rootfs", "assets"),
		cli.BoolVar(&c.dryRun, "dry-run", "resolve the image and print the plan as JSON; write nothing"),
		cli.ListVar(&c.base, "base", "DIR", "Gondolin base bundle (kernel, initramfs, rootfs.ext4 with the runtime glue) for the target arch; repeat it, one per arch, for several platforms; default: GONDOLIN_GUEST_DIR, Gondolin's image store, then a download"),
		cli.BoolVar(&c.noDownload, "no-download", "never download a Gondolin base bundle"),
		cli.BoolVar(&c.plain, "plain", "rootfs mode only: write the image tree alone, without Gondolin's runtime glue"),
		cli.OptionalVar(&c.rootfsMode, "rootfs-mode", "MODE", "assets mode: Gondolin's default rootfs mode in manifest.json: cow (default), memory or readonly").WithValues("cow", "memory", "readonly"),
		cli.StringVar(&c.tag, "tag", "NAME:TAG", "assets mode: also import the guest into Gondolin's image store under this tag"),
		cli.StringVar(&c.publish, "publish", "DIR", "assets mode, with --tag: also add the guest to the Gondolin image registry in DIR (builtin-image-registry.json and builds/), to serve over HTTP"),
		cli.StringVar(&c.publishURL, "publish-url", "URL", "with --publish: the URL DIR is served at, for absolute archive URLs (default: relative to the document)"),
		cli.StringVar(&c.progress, "progress", "MODE", "progress on stderr: auto (default: tty on a terminal, else plain), plain, tty, quiet, or json (one JSON object per line, for programs)").WithValues(cli.ProgressModes...),
		cli.BoolVar(&c.quiet, "quiet", "no progress on stderr (--progress quiet)"),
		cli.StringVar(&c.cacheDir, "cache-dir", "DIR", "blob, result and prefix cache directory (default $XDG_CACHE_HOME/docker2vm, else ~/.cache/docker2vm; on macOS ~/Library/Caches/docker2vm)"),
		cli.BoolVar(&c.noCache, "no-cache", "neither read nor write the blob, result and prefix caches"),
		cli.StringVar(&c.cacheMax, "cache-max", "SIZE", "after a run, trim the cache directory to this size, least recently used first (default 10G, or $DOCKER2VM_CACHE_MAX; none: no limit)"),
		cli.ListVar(&c.insecureRegistries, "insecure-registry", "HOST[:PORT]", "reach this registry over plain HTTP (repeatable; loopback registries always are)"),
		cli.OptionalVar(&c.stallTimeout, "stall-timeout", "DURATION", "give up a registry request that receives nothing for this long, e.g. 90s or 5m, and retry it (default $DOCKER2VM_STALL_TIMEOUT, else 60s)"),
		cli.OptionalVar(&c.parallelDownloads, "parallel-downloads", "N", "run up to N downloads from a registry at once (layers, and Range segments of large layers), in layer order, while the layers before them are applied (default $DOCKER2VM_PARALLEL_DOWNLOADS, else 6; 1: one layer at a time, each in one request)"),
		cli.OptionalVar(&c.size, "size", "BYTES", "exact rootfs.ext4 size, e.g. 2G (default: space used plus headroom)"),
		cli.OptionalVar(&c.headroom, "headroom", "BYTES", "free space added for the guest when --size is not given, e.g. 512M"),
		cli.BoolVar(&c.noJournal, "no-journal", "write ext4 without a journal"),
		cli.OptionalVar(&c.fsLabel, "fs-label", "NAME", "ext4 filesystem label of rootfs.ext4 (default gondolin-root)"),
		cli.OptionalVar(&c.maxBytes, "max-bytes", "BYTES", "refuse images whose layers hold more file data than this (default 64G)"),
		cli.OptionalVar(&c.maxLayers, "max-layers", "N", "refuse images with more layers than this, before downloading any (default 1000)"),
		cli.OptionalVar(&c.maxEntries, "max-entries", "N", "refuse images whose layers hold more entries than this (default 10000000)"),
		cli.OptionalVar(&c.maxPath, "max-path", "N", "refuse entry names longer than this many bytes (default 4096)"),
	}
}

// parseMode reads --mode (case-insensitive).
func parseMode(mode cli.Optional) (convert.Mode, error) {
	switch m := strings.ToLower(mode.Or("rootfs")); m {
	case "rootfs":
		return convert.ModeRootfs, nil
	case "assets":
		return convert.ModeAssets, nil
	default:
		return "", &hint.Error{Msg: fmt.Sprintf("Invalid --mode %q.", mode.Value),
			Fixes: []string{"Use --mode rootfs or --mode assets."}}
	}
}

// platforms reads --platform: one platform or a comma-separated list; the
// host's when not given.
func (c *commonFlags) platforms() ([]image.Platform, error) {
	if !c.platform.Set {
		return []image.Platform{image.HostPlatform()}, nil
	}
	return image.ParsePlatforms(c.platform.Value)
}

// baseOptions turns the shared flags into convert options; the platform
// is the first of --platform's (see platforms).
func (c *commonFlags) baseOptions(command string, stderr io.Writer) (convert.Options, error) {
	opts := convert.Options{Command: command, Progress: io.Discard}
	con, err := c.progressConsole(stderr)
	if err != nil {
		return opts, err
	}
	if con != nil {
		opts.Progress = con
	}
	// Each group of flags in its own function, in the order --help lists
	// them; the first error wins.
	for _, bind := range []func(*convert.Options) error{c.bindOutput, c.bindImage, c.bindFS, c.bindLimits} {
		if err := bind(&opts); err != nil {
			return opts, err
		}
	}
	if con != nil {
		opts.Image.Progress = con
	}
	return opts, nil
}

// progressMode reads --progress and --quiet (see cli.ProgressMode).
func (c *commonFlags) progressMode(stderr io.Writer) (string, error) {
	return cli.ProgressMode(c.progress, c.quiet, stderr)
}

// progressConsole is the console that owns stderr for the run (every line
// goes above the download bars it draws), or nil for --progress quiet.
func (c *commonFlags) progressConsole(stderr io.Writer) (*console.Console, error) {
	mode, err := c.progressMode(stderr)
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
func (c *commonFlags) bindOutput(opts *convert.Options) error {
	if c.out == "" {
		return &hint.Error{Msg: "Missing required flag --out.", Fixes: []string{"Pass --out PATH: the directory to write the result into."}}
	}
	opts.OutDir = c.out
	opts.Force = c.force
	mode, err := parseMode(c.mode)
	if err != nil {
		return err
	}
	opts.Mode = mode
	opts.Base = gondolin.BaseOptions{Dirs: c.base, NoDownload: c.noDownload}
	opts.Plain = c.plain
	opts.Tag = c.tag
	if opts.Publish = c.publish; opts.Publish != "" {
		if opts.Publish, err = filepath.Abs(opts.Publish); err != nil {
			return err
		}
	}
	opts.PublishURL = c.publishURL
	if c.rootfsMode.Set {
		if mode != convert.ModeAssets {
			return &hint.Error{Msg: "--rootfs-mode needs --mode assets", Fixes: []string{"Add --mode assets, or drop --rootfs-mode."}}
		}
		if opts.RootfsMode, err = gondolin.ParseRootfsMode(c.rootfsMode.Value); err != nil {
			return err
		}
	}
	return nil
}

// bindImage reads how the image is fetched: the first --platform, the
// cache, the network's limits, --max-layers.
func (c *commonFlags) bindImage(opts *convert.Options) error {
	plats, err := c.platforms()
	if err != nil {
		return err
	}
	opts.Image = image.Options{
		Platform:           plats[0],
		CacheDir:           absCacheDir(c.cacheDir),
		NoCache:            c.noCache,
		InsecureRegistries: c.insecureRegistries,
	}
	if opts.CacheMax, err = cacheMax(c.cacheMax); err != nil {
		return err
	}
	if c.stallTimeout.Set {
		v := c.stallTimeout.Value
		if opts.Image.StallTimeout, err = image.ParseStallTimeout(v); err != nil {
			return &hint.Error{Msg: fmt.Sprintf("Invalid duration for --stall-timeout: %q.", v),
				Fixes: []string{"Give a duration such as --stall-timeout 90s or --stall-timeout 5m."}}
		}
	}
	if c.parallelDownloads.Set {
		v := c.parallelDownloads.Value
		if opts.Image.ParallelDownloads, err = image.ParseParallelDownloads(v); err != nil {
			return &hint.Error{Msg: fmt.Sprintf("Invalid --parallel-downloads %q.", v),
				Fixes: []string{"Give a number from 1 (one download at a time) to 32, e.g. --parallel-downloads 8."}}
		}
	}
	return parseGiven("max-layers", c.maxLayers, &opts.Image.MaxLayers, cli.ParseCount)
}

// bindFS reads the file system's flags: --size, --headroom, --no-journal,
// --fs-label (and oci2gondolin's deprecated --label), SOURCE_DATE_EPOCH.
func (c *commonFlags) bindFS(opts *convert.Options) error {
	if err := parseGiven("size", c.size, &opts.FS.Size, cli.ParseSize); err != nil {
		return err
	}
	if err := parseGiven("headroom", c.headroom, &opts.FS.Headroom, cli.ParseSize); err != nil {
		return err
	}
	opts.FS.NoJournal = c.noJournal
	opts.FS.Label = c.fsLabel.Value
	if c.deprecatedLabel.Set {
		if c.fsLabel.Set {
			return &hint.Error{Msg: "--label and --fs-label are both given.", Fixes: []string{"Pass only --fs-label NAME (--label is its deprecated name)."}}
		}
		fmt.Fprintln(opts.Progress, "warning: --label is deprecated: use --fs-label")
		opts.FS.Label = c.deprecatedLabel.Value
	}
	if len(opts.FS.Label) > 16 {
		return &hint.Error{Msg: fmt.Sprintf("Filesystem label %q is longer than 16 bytes.", opts.FS.Label),
			Fixes: []string{"ext4 labels hold at most 16 bytes: pass a shorter --fs-label."}}
	}
	var err error
	opts.FS.SourceDateEpoch, err = sourceDateEpoch()
	return err
}

// bindLimits reads the limits on what an image may hold: --max-bytes,
// --max-entries, --max-path.
func (c *commonFlags) bindLimits(opts *convert.Options) error {
	if err := parseGiven("max-bytes", c.maxBytes, &opts.Limits.MaxBytes, cli.ParseSize); err != nil {
		return err
	}
	if err := parseGiven("max-entries", c.maxEntries, &opts.Limits.MaxEntries, cli.ParseCount); err != nil {
		return err
	}
	return parseGiven("max-path", c.maxPath, &opts.Limits.MaxPathLen, cli.ParseCount)
}

// parseGiven sets *dst to what parse (cli.ParseSize or cli.ParseCount)
// reads from flag's value v, when the flag was given.
func parseGiven[T int | int64](flag string, v cli.Optional, dst *T, parse func(flag, s string) (int64, error)) error {
	if !v.Set {
		return nil
	}
	n, err := parse(flag, v.Value)
	if err != nil {
		return err
	}
	*dst = T(n)
	return nil
}

// absCacheDir is --cache-dir, made absolute (it is reported and locked).
func absCacheDir(d string) string {
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
