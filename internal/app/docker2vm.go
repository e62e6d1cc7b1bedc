package app

import (
	"context"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/image"
	"github.com/docker2vm/docker2vm/internal/cachedir"
	"github.com/docker2vm/docker2vm/internal/cli"
	"github.com/docker2vm/docker2vm/internal/units"
)

const docker2vmUsage = `docker2vm does what is not a conversion: the caches, shell completion, the version.
The conversions are oci2gondolin and dockerfile2gondolin.

Usage:
  docker2vm COMMAND [flags]`

// Docker2VM is the docker2vm command.
func Docker2VM() *cli.Command {
	du, prune := &cacheDuFlags{}, &cachePruneFlags{}
	return &cli.Command{Name: "docker2vm", Usage: docker2vmUsage, Examples: docker2vmExamples, Env: docker2vmEnv, Subs: []*cli.Command{
		{Name: "cache", Short: "see and reclaim the blob, result and prefix caches", Usage: "docker2vm cache: the blob, result and prefix caches.\n\nUsage:\n  docker2vm cache COMMAND [flags]",
			Subs: []*cli.Command{
				{Name: "du", Short: "list the cache's entries, their sizes and last use, and the total",
					Usage: "docker2vm cache du lists the cache's entries, least recently used first.\n\nUsage:\n  docker2vm cache du [--cache-dir DIR] [--json]",
					Flags: du.flags(),
					Run:   du.run},
				{Name: "prune", Short: "remove cache entries: down to --keep-storage, or --all",
					Usage: "docker2vm cache prune removes the least recently used entries until the cache fits --keep-storage\n" +
						"(default: the --cache-max limit, 10G unless DOCKER2VM_CACHE_MAX says otherwise), or every entry with --all.\n" +
						"Entries a running conversion uses are left.\n\nUsage:\n  docker2vm cache prune [--all | --keep-storage SIZE] [--cache-dir DIR] [--dry-run]",
					Flags: prune.flags(),
					Run:   prune.run},
			}},
		{Name: "completion", Short: "print the shell completion script of docker2vm's commands",
			Usage: "docker2vm completion SHELL prints a completion script for oci2gondolin, dockerfile2gondolin and docker2vm.\n\n" +
				"Usage:\n  docker2vm completion bash|zsh|fish\n\n" +
				"  bash:  source <(docker2vm completion bash)      (or save it in /etc/bash_completion.d/docker2vm)\n" +
				"  zsh:   docker2vm completion zsh > \"${fpath[1]}/_docker2vm\"\n" +
				"  fish:  docker2vm completion fish > ~/.config/fish/completions/docker2vm.fish",
			Args: []string{"SHELL"}, ArgValues: cli.Shells, Run: runCompletion},
		{Name: "version", Short: "print the version", Usage: "docker2vm version prints the version the binary was built from.\n\nUsage:\n  docker2vm version",
			Run: func(ctx context.Context, _ []string, stdout, stderr io.Writer) error {
				_, err := fmt.Fprintf(stdout, "docker2vm %s\n", cli.Version())
				return err
			}},
	}}
}

// Commands are the executables docker2vm ships, for completion and man
// pages.
func Commands() []*cli.Command {
	return []*cli.Command{OCI2Gondolin(), Dockerfile2Gondolin(), Docker2VM()}
}

func runCompletion(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) != 1 {
		return &hint.Error{Msg: "docker2vm completion needs a shell.", Fixes: []string{"Write docker2vm completion bash, zsh or fish."}}
	}
	script, err := cli.Completion(args[0], Commands())
	if err != nil {
		return err
	}
	_, err = io.WriteString(stdout, script)
	return err
}

// cacheDirVar is the cache subcommands' --cache-dir.
func cacheDirVar(p *string) cli.Flag {
	return cli.StringVar(p, "cache-dir", "DIR", "the cache directory (default $XDG_CACHE_HOME/docker2vm, else ~/.cache/docker2vm; on macOS ~/Library/Caches/docker2vm)")
}

// cacheRoot is dir (--cache-dir) or the default, checked to be a directory.
func cacheRoot(dir string) (string, error) {
	root := absCacheDir(dir)
	if root == "" {
		var err error
		if root, err = image.DefaultCacheDir(); err != nil {
			return "", err
		}
	}
	if fi, err := os.Stat(root); err == nil && !fi.IsDir() {
		return "", &hint.Error{Msg: fmt.Sprintf("the cache directory %s is not a directory", root),
			Fixes: []string{"Pass --cache-dir with a directory, or remove " + root + "."}}
	}
	return root, nil
}

// cacheDuFlags are docker2vm cache du's flags.
type cacheDuFlags struct {
	cacheDir string
	json     bool
}

func (c *cacheDuFlags) flags() []cli.Flag {
	return []cli.Flag{cacheDirVar(&c.cacheDir), cli.BoolVar(&c.json, "json", "print the entries and the total as JSON")}
}

func (c *cacheDuFlags) run(_ context.Context, _ []string, stdout, _ io.Writer) error {
	root, err := cacheRoot(c.cacheDir)
	if err != nil {
		return err
	}
	entries, err := cachedir.List(root)
	if err != nil {
		return fmt.Errorf("reading the cache %s: %w", root, err)
	}
	if c.json {
		if entries == nil {
			entries = []cachedir.Entry{}
		}
		return cli.PrintJSON(stdout, struct {
			Dir     string           `json:"dir"`
			Entries []cachedir.Entry `json:"entries"`
			Bytes   int64            `json:"bytes"`
		}{root, entries, cachedir.Total(entries)})
	}
	printEntries(stdout, entries)
	fmt.Fprintf(stdout, "%d entries, %s in %s\n", len(entries), units.Bytes(cachedir.Total(entries)), root)
	return nil
}

// printEntries writes a table of entries, with what each belongs to.
func printEntries(w io.Writer, entries []cachedir.Entry) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tID\tSIZE\tLAST USE\tOF")
	now := time.Now()
	for _, e := range entries {
		id := e.ID
		if len(id) > 26 {
			id = id[:26] + "…"
		}
		of := e.Of
		if of == "" {
			of = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Kind, id, units.Bytes(e.Bytes), ago(now.Sub(e.LastUse)), of)
	}
	tw.Flush()
}

func ago(d time.Duration) string {
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return fmt.Sprintf("%d minutes ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d hours ago", int(d.Hours()))
	}
	return fmt.Sprintf("%d days ago", int(d.Hours()/24))
}

// cachePruneFlags are docker2vm cache prune's flags.
type cachePruneFlags struct {
	cacheDir    string
	all, dryRun bool
	keepStorage cli.Optional
}

func (c *cachePruneFlags) flags() []cli.Flag {
	return []cli.Flag{cacheDirVar(&c.cacheDir), cli.BoolVar(&c.all, "all", "remove every entry not in use"),
		cli.BoolVar(&c.dryRun, "dry-run", "list what would be removed, and remove nothing"),
		cli.OptionalVar(&c.keepStorage, "keep-storage", "SIZE", "remove least recently used entries until the cache takes at most SIZE (e.g. 2G)")}
}

func (c *cachePruneFlags) run(_ context.Context, _ []string, stdout, _ io.Writer) error {
	root, err := cacheRoot(c.cacheDir)
	if err != nil {
		return err
	}
	if c.all && c.keepStorage.Set {
		return &hint.Error{Msg: "--all and --keep-storage cannot be used together.", Fixes: []string{"Pass one of them."}}
	}
	var r cachedir.Removed
	switch {
	case c.all:
		r, err = cachedir.Trim(root, -1, c.dryRun)
	default:
		keep := int64(0)
		if c.keepStorage.Set {
			if keep, err = cli.ParseSize("keep-storage", c.keepStorage.Value); err != nil {
				return err
			}
		} else {
			// cache prune has no --cache-max: DOCKER2VM_CACHE_MAX, else the default.
			if keep, err = cacheMax(""); err != nil {
				return err
			}
			if keep == 0 {
				keep = cachedir.DefaultMax
			}
			if keep < 0 {
				keep = 1 << 62
			}
		}
		r, err = cachedir.Trim(root, keep, c.dryRun)
	}
	if err != nil {
		return fmt.Errorf("pruning the cache %s: %w", root, err)
	}
	if c.dryRun {
		printEntries(stdout, r.Entries)
		fmt.Fprintf(stdout, "would remove %d entries, %s", len(r.Entries), units.Bytes(r.Bytes))
	} else {
		fmt.Fprintf(stdout, "removed %d entries, %s reclaimed", len(r.Entries), units.Bytes(r.Bytes))
	}
	if r.Busy > 0 {
		fmt.Fprintf(stdout, "; %d in use by a running conversion were left", r.Busy)
	}
	fmt.Fprintln(stdout)
	return nil
}
