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
	"github.com/docker2vm/docker2vm/rootfs"
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
	progressMode, err := cli.ProgressMode(f, stderr)
	if err != nil {
		return opts, err
	}
	// One console owns stderr for the run: every line goes above the
	// download bars it draws.
	var con *console.Console
	switch progressMode {
	case "quiet":
	case "json":
		con = console.NewJSON(stderr)
	default:
		con = console.New(stderr, progressMode != "tty")
	}
	if con != nil {
		opts.Progress = con
	}
	out := f.Str("out", "")
	if out == "" {
		return opts, &hint.Error{Msg: "Missing required flag --out.", Fixes: []string{"Pass --out PATH: the directory to write the result into."}}
	}
	opts.OutDir = out
	opts.Force = f.Bool("force")
	plats, err := platforms(f)
	if err != nil {
		return opts, err
	}
	mode, err := parseMode(f)
	if err != nil {
		return opts, err
	}
	opts.Mode = mode
	opts.Base = gondolin.BaseOptions{Dirs: f.List("base"), NoDownload: f.Bool("no-download")}
	opts.Plain = f.Bool("plain")
	opts.Tag = f.Str("tag", "")
	if opts.Publish = f.Str("publish", ""); opts.Publish != "" {
		if opts.Publish, err = filepath.Abs(opts.Publish); err != nil {
			return opts, err
		}
	}
	opts.PublishURL = f.Str("publish-url", "")
	if f.Has("rootfs-mode") {
		if mode != convert.ModeAssets {
			return opts, &hint.Error{Msg: "--rootfs-mode needs --mode assets", Fixes: []string{"Add --mode assets, or drop --rootfs-mode."}}
		}
		if opts.RootfsMode, err = gondolin.ParseRootfsMode(f.Str("rootfs-mode", "")); err != nil {
			return opts, err
		}
	}
	opts.Image = image.Options{
		Platform:           image.HostPlatform(),
		CacheDir:           cacheDir(f),
		NoCache:            f.Bool("no-cache"),
		InsecureRegistries: f.List("insecure-registry"),
	}
	opts.Image.Platform = plats[0]
	if opts.CacheMax, err = cacheMax(f); err != nil {
		return opts, err
	}
	if f.Has("stall-timeout") {
		v := f.Str("stall-timeout", "")
		if opts.Image.StallTimeout, err = image.ParseStallTimeout(v); err != nil {
			return opts, &hint.Error{Msg: fmt.Sprintf("Invalid duration for --stall-timeout: %q.", v),
				Fixes: []string{"Give a duration such as --stall-timeout 90s or --stall-timeout 5m."}}
		}
	}
	if f.Has("parallel-downloads") {
		v := f.Str("parallel-downloads", "")
		if opts.Image.ParallelDownloads, err = image.ParseParallelDownloads(v); err != nil {
			return opts, &hint.Error{Msg: fmt.Sprintf("Invalid --parallel-downloads %q.", v),
				Fixes: []string{"Give a number from 1 (one download at a time) to 32, e.g. --parallel-downloads 8."}}
		}
	}
	if f.Has("max-layers") {
		n, err := cli.ParseCount("max-layers", f.Str("max-layers", ""))
		if err != nil {
			return opts, err
		}
		opts.Image.MaxLayers = int(n)
	}
	if con != nil {
		opts.Image.Progress = con
	}
	if f.Has("size") {
		if opts.FS.Size, err = cli.ParseSize("size", f.Str("size", "")); err != nil {
			return opts, err
		}
	}
	if f.Has("headroom") {
		if opts.FS.Headroom, err = cli.ParseSize("headroom", f.Str("headroom", "")); err != nil {
			return opts, err
		}
	}
	opts.FS.NoJournal = f.Bool("no-journal")
	opts.FS.Label = f.Str("fs-label", "")
	// oci2gondolin's --label was the filesystem label; it still is, for
	// one release. (dockerfile2gondolin's --label is an image label, as
	// in docker build.)
	if command == "oci2gondolin" && f.Has("label") {
		if f.Has("fs-label") {
			return opts, &hint.Error{Msg: "--label and --fs-label are both given.", Fixes: []string{"Pass only --fs-label NAME (--label is its deprecated name)."}}
		}
		fmt.Fprintln(opts.Progress, "warning: --label is deprecated: use --fs-label")
		opts.FS.Label = f.Str("label", "")
	}
	if len(opts.FS.Label) > 16 {
		return opts, &hint.Error{Msg: fmt.Sprintf("Filesystem label %q is longer than 16 bytes.", opts.FS.Label),
			Fixes: []string{"ext4 labels hold at most 16 bytes: pass a shorter --fs-label."}}
	}
	lim := rootfs.Limits{}
	if f.Has("max-bytes") {
		if lim.MaxBytes, err = cli.ParseSize("max-bytes", f.Str("max-bytes", "")); err != nil {
			return opts, err
		}
	}
	if f.Has("max-entries") {
		n, err := cli.ParseCount("max-entries", f.Str("max-entries", ""))
		if err != nil {
			return opts, err
		}
		lim.MaxEntries = int(n)
	}
	if f.Has("max-path") {
		n, err := cli.ParseCount("max-path", f.Str("max-path", ""))
		if err != nil {
			return opts, err
		}
		lim.MaxPathLen = int(n)
	}
	opts.Limits = lim
	sde, err := sourceDateEpoch()
	if err != nil {
		return opts, err
	}
	opts.FS.SourceDateEpoch = sde
	return opts, nil
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

// cacheMax reads --cache-max, else DOCKER2VM_CACHE_MAX: a size, or
// "none" (-1: no limit); 0 when neither is set (the default).
func cacheMax(f *cli.Flags) (int64, error) {
	v, from := f.Str("cache-max", ""), "--cache-max"
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
