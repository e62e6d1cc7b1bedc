package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/internal/term"
)

// Exit codes shared by every command.
const (
	ExitOK      = 0
	ExitFailure = 1
	// ExitInterrupted is the shell's convention for a program stopped by
	// SIGINT (128+2); used for SIGTERM too, after cleaning up.
	ExitInterrupted = 130
)

// Command is one executable's entry point, or one subcommand of it.
type Command struct {
	Name  string
	Short string // one line, for the list of a parent's subcommands
	Usage string // synopsis and description shown before the flag table
	Flags []Flag
	// Args names the positional arguments the command takes (at most
	// that many), e.g. {"SHELL"}; Values of the first, if it takes one
	// of a few, for completion.
	Args      []string
	ArgValues []string
	// Examples are command lines, each with a line saying what it does
	// (for the man page), and Env the environment variables the command
	// reads, each with its meaning.
	Examples []Example
	Env      []EnvVar
	// Subs are subcommands (`docker2vm cache prune`): a command with Subs
	// runs the one its first argument names, and has no Run of its own.
	Subs []*Command
	// Run does the work, once Exec has set the variables Flags are bound
	// to; args are the positional arguments. A converter writes its one
	// JSON result to stdout and human-facing progress to stderr.
	Run func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// helpFlag and versionFlag are what --help lists besides a command's
// flags; Exec answers them before its flags are parsed.
var (
	helpFlag    = BoolVar(new(bool), "help", "show this help")
	versionFlag = BoolVar(new(bool), "version", "print the version")
)

// Example is a command line and what it does.
type Example struct{ What, Command string }

// EnvVar is an environment variable a command reads.
type EnvVar struct{ Name, Meaning string }

// Main parses args, runs the command with a context cancelled on SIGINT or
// SIGTERM, renders errors and returns the process exit code.
//
// SIGPIPE is caught too: without that, a write to a closed stdout (the
// JSON result piped into `head -1`) kills the process before it removes
// its temporary files; with it the write fails, the run cleans up and
// exits 1.
func (c *Command) Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	signal.Ignore(syscall.SIGPIPE)
	return c.Exec(ctx, args, stdout, stderr)
}

// Exec is Main without signal handling, for tests. The variables the
// command's flags are bound to are those of one run: a Command runs once
// at a time.
func (c *Command) Exec(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(c.Subs) > 0 {
		return c.execSub(ctx, args, stdout, stderr)
	}
	positional, err := parse(args, c.Flags, len(c.Args))
	if errors.Is(err, ErrHelp) {
		fmt.Fprint(stdout, c.Help())
		return ExitOK
	}
	if errors.Is(err, ErrVersion) {
		fmt.Fprintf(stdout, "%s %s\n", c.Name, Version())
		return ExitOK
	}
	if err == nil {
		err = c.Run(ctx, positional, stdout, stderr)
	}
	if err != nil {
		if jsonProgress(args) {
			RenderJSON(stderr, err, ctx.Err() != nil)
		} else {
			Render(stderr, err)
		}
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return ExitInterrupted
		}
		return ExitFailure
	}
	return ExitOK
}

// jsonProgress reports whether the run reports as JSON (--progress json),
// from the arguments, whether they parsed or not: an argument that is
// --progress or --progress=json is the flag itself, since a value in an
// argument of its own never starts with "--".
func jsonProgress(args []string) bool {
	for i, a := range args {
		if strings.EqualFold(a, "--progress=json") || a == "--progress" && i+1 < len(args) && strings.EqualFold(args[i+1], "json") {
			return true
		}
	}
	return false
}

// execSub runs the subcommand args[0] names.
func (c *Command) execSub(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "--help" || args[0] == "-h" || args[0] == "help" {
		fmt.Fprint(stdout, c.Help())
		return ExitOK
	}
	if args[0] == "--version" {
		fmt.Fprintf(stdout, "%s %s\n", c.Name, Version())
		return ExitOK
	}
	for _, s := range c.Subs {
		if s.Name == args[0] {
			sub := *s
			sub.Name = c.Name + " " + s.Name
			return sub.Exec(ctx, args[1:], stdout, stderr)
		}
	}
	var names, near []string
	for _, s := range c.Subs {
		names = append(names, s.Name)
		if editDistance(args[0], s.Name) <= 2 {
			near = append(near, s.Name)
		}
	}
	var fixes []string
	if len(near) > 0 {
		fixes = append(fixes, "Did you mean "+strings.Join(near, " or ")+"?")
	}
	fixes = append(fixes, "Use one of: "+strings.Join(names, ", ")+".", "Run "+c.Name+" --help for more.")
	Render(stderr, &hint.Error{Msg: fmt.Sprintf("Unknown command %q for %s.", args[0], c.Name), Fixes: fixes})
	return ExitFailure
}

// Help is the --help text.
func (c *Command) Help() string {
	if len(c.Subs) > 0 {
		var b strings.Builder
		b.WriteString(strings.TrimRight(c.Usage, "\n") + "\n\nCommands:\n")
		width := 0
		for _, s := range c.Subs {
			width = max(width, len(s.Name))
		}
		for _, s := range c.Subs {
			fmt.Fprintf(&b, "  %-*s  %s\n", width, s.Name, s.Short)
		}
		fmt.Fprintf(&b, "\nRun %s COMMAND --help for a command's flags.\n", c.Name)
		return b.String()
	}
	all := append(append([]Flag{}, c.Flags...), helpFlag, versionFlag)
	return strings.TrimRight(c.Usage, "\n") + "\n\nFlags:\n" + Usage(all)
}

// stamped is the version given at link time (`make build` and `make dist`
// pass -ldflags "-X github.com/docker2vm/docker2vm/internal/cli.stamped=V"),
// so that it is right where the VCS revision is not recorded
// (-buildvcs=false, a source archive).
var stamped string

// Version is the version the binary was built from: the one stamped at
// link time, else the module version (a tag when installed with go
// install), else the VCS revision, else "devel".
func Version() string {
	if stamped != "" {
		return stamped
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	return vcsVersion(rev, dirty)
}

// vcsVersion is the version of an unstamped build from a checkout at
// revision rev: devel-<12 hex>[-dirty] (scripts/version.sh prints the same
// for an untagged checkout).
func vcsVersion(rev string, dirty bool) string {
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return "devel-" + rev
}

// ProgressModes are the values of --progress, the same in every command.
var ProgressModes = []string{"auto", "plain", "tty", "quiet", "json"}

// ProgressMode reads --progress (progress, "" when not given): auto (the
// default: tty when stderr is a terminal, else plain), plain, tty, quiet
// or json; --quiet means quiet. tty when stderr is not a terminal is an
// error.
func ProgressMode(progress string, quiet bool, stderr io.Writer) (string, error) {
	mode := strings.ToLower(strings.TrimSpace(progress))
	if quiet {
		if mode != "" && mode != "quiet" {
			return "", &hint.Error{Msg: fmt.Sprintf("--quiet and --progress %s contradict each other.", mode), Fixes: []string{"Pass one of them."}}
		}
		return "quiet", nil
	}
	switch mode {
	case "", "auto":
		if term.IsTerminal(stderr) {
			return "tty", nil
		}
		return "plain", nil
	case "plain", "quiet", "json":
		return mode, nil
	case "tty":
		if !term.IsTerminal(stderr) {
			return "", &hint.Error{Msg: "--progress tty needs a terminal on stderr.", Fixes: []string{"Use --progress plain (or auto) when stderr is a file or a pipe."}}
		}
		return mode, nil
	}
	return "", &hint.Error{Msg: fmt.Sprintf("Unknown --progress %q.", progress),
		Fixes: []string{"Use --progress " + strings.Join(ProgressModes, ", ") + "."}}
}

// ParseSize reads a byte count: a plain number or one with a binary suffix
// (K, M, G, T, optionally followed by "i" and/or "B": 512M, 2GiB, 1T).
func ParseSize(flag, s string) (int64, error) {
	orig := s
	s = strings.TrimSpace(strings.ToUpper(s))
	s = strings.TrimSuffix(s, "B")
	s = strings.TrimSuffix(s, "I")
	mult := int64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult != 1 {
			s = s[:n-1]
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 || (mult > 1 && v > (1<<62)/mult) {
		return 0, &hint.Error{Msg: fmt.Sprintf("Invalid size for --%s: %q.", flag, orig),
			Fixes: []string{fmt.Sprintf("Give a byte count such as --%s 1073741824, --%s 512M or --%s 2G.", flag, flag, flag)}}
	}
	return v * mult, nil
}

// ParseCount reads a non-negative integer flag.
func ParseCount(flag, s string) (int64, error) {
	v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || v < 0 {
		return 0, &hint.Error{Msg: fmt.Sprintf("Invalid number for --%s: %q.", flag, s),
			Fixes: []string{fmt.Sprintf("Give a whole number, e.g. --%s 1000000.", flag)}}
	}
	return v, nil
}
