package cli

import (
	"fmt"
	"strings"
)

// Man returns the man page (roff, section 1) of cmd, from the same
// definitions as --help: its usage, its flags, and each subcommand's.
func Man(cmd *Command, date string) string {
	var b strings.Builder
	name := strings.ReplaceAll(cmd.Name, " ", "-")
	fmt.Fprintf(&b, ".TH %s 1 %q \"docker2vm %s\" \"docker2vm\"\n", strings.ToUpper(name), date, roffEscape(Version()))
	b.WriteString(".SH NAME\n")
	short := cmd.Short
	if short == "" {
		short = firstLine(cmd.Usage)
	}
	fmt.Fprintf(&b, "%s \\- %s\n", roffEscape(cmd.Name), roffEscape(strings.TrimPrefix(short, cmd.Name+" ")))
	b.WriteString(".SH DESCRIPTION\n")
	for _, para := range strings.Split(strings.TrimSpace(cmd.Usage), "\n\n") {
		b.WriteString(".PP\n.nf\n" + roffEscape(para) + "\n.fi\n")
	}
	manFlags(&b, cmd)
	for _, n := range walk(cmd)[1:] {
		if len(n.cmd.Subs) > 0 {
			continue
		}
		fmt.Fprintf(&b, ".SH %s\n", roffEscape(strings.ToUpper(cmd.Name+" "+n.path)))
		for _, para := range strings.Split(strings.TrimSpace(n.cmd.Usage), "\n\n") {
			b.WriteString(".PP\n.nf\n" + roffEscape(para) + "\n.fi\n")
		}
		manFlags(&b, n.cmd)
	}
	if len(cmd.Examples) > 0 {
		b.WriteString(".SH EXAMPLES\n")
		for _, e := range cmd.Examples {
			b.WriteString(".PP\n" + roffEscape(e.What) + "\n.PP\n.RS\n.nf\n" + roffEscape(e.Command) + "\n.fi\n.RE\n")
		}
	}
	b.WriteString(".SH EXIT STATUS\n")
	for _, x := range exitStatus {
		b.WriteString(".TP\n" + x[0] + "\n" + roffEscape(x[1]) + "\n")
	}
	if len(cmd.Env) > 0 {
		b.WriteString(".SH ENVIRONMENT\n")
		for _, e := range cmd.Env {
			b.WriteString(".TP\n\\fB" + roffEscape(e.Name) + "\\fR\n" + roffEscape(e.Meaning) + "\n")
		}
	}
	b.WriteString(".SH SEE ALSO\noci2gondolin(1), dockerfile2gondolin(1), docker2vm(1)\n")
	return b.String()
}

// exitStatus are the exit codes of every command (see Exec).
var exitStatus = [][2]string{
	{"0", "Success. A converter's one JSON result is on standard output."},
	{"1", "Failure: bad input, a failed build or transfer, no room. Standard error says what failed and how to fix it; nothing was left half written."},
	{"130", "Interrupted by SIGINT or SIGTERM, after removing what the run had started to write."},
}

func manFlags(b *strings.Builder, c *Command) {
	flags := visibleFlags(c)
	if len(flags) <= 1 {
		return
	}
	b.WriteString(".SS FLAGS\n")
	for _, f := range flags {
		b.WriteString(".TP\n")
		if f.Short != "" {
			b.WriteString("\\fB\\-" + roffEscape(f.Short) + "\\fR, ")
		}
		b.WriteString("\\fB\\-\\-" + roffEscape(f.Name) + "\\fR")
		if f.kind != Bool {
			b.WriteString(" \\fI" + roffEscape(placeholder(f)) + "\\fR")
		}
		b.WriteString("\n" + roffEscape(f.Usage) + "\n")
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSuffix(l, ".")
}

// roffEscape keeps text from being read as roff requests or escapes.
func roffEscape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
			l = `\&` + l
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}
