package cli

// Shell completion scripts, generated from the same command and flag
// definitions as --help, so they never disagree with what the commands
// accept.

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/internal/shell"
)

// Shells are the shells Completion writes scripts for.
var Shells = []string{"bash", "zsh", "fish"}

// Completion returns the completion script of shell for cmds (each an
// executable: its Name is what the user types).
func Completion(shell string, cmds []*Command) (string, error) {
	switch shell {
	case "bash":
		return bashCompletion(cmds), nil
	case "zsh":
		return zshCompletion(cmds), nil
	case "fish":
		return fishCompletion(cmds), nil
	}
	return "", &hint.Error{Msg: fmt.Sprintf("Unknown shell %q.", shell),
		Fixes: []string{"Use one of: " + strings.Join(Shells, ", ") + "."}}
}

// node is a command with its path of subcommand names below the
// executable ("" for the executable itself, "cache prune").
type node struct {
	path string
	cmd  *Command
}

func walk(c *Command) []node {
	var out []node
	var rec func(path string, c *Command)
	rec = func(path string, c *Command) {
		out = append(out, node{path, c})
		for _, s := range c.Subs {
			p := s.Name
			if path != "" {
				p = path + " " + s.Name
			}
			rec(p, s)
		}
	}
	rec("", c)
	return out
}

// visibleFlags are the flags to offer: the command's, and --help.
func visibleFlags(c *Command) []Flag {
	var out []Flag
	for _, f := range c.Flags {
		if !f.Hidden {
			out = append(out, f)
		}
	}
	return append(out, helpFlag)
}

func funcName(parts ...string) string {
	r := strings.NewReplacer("-", "_", " ", "_", ".", "_")
	return "_d2v_" + r.Replace(strings.Join(parts, "_"))
}

func bashCompletion(cmds []*Command) string {
	var b strings.Builder
	b.WriteString("# bash completion for docker2vm's commands (generated: docker2vm completion bash)\n")
	for _, c := range cmds {
		nodes := walk(c)
		valued := map[string]bool{}
		known := []string{}
		for _, n := range nodes {
			if n.path != "" {
				known = append(known, n.path)
			}
			for _, f := range n.cmd.Flags {
				if f.kind != Bool {
					valued["--"+f.Name] = true
				}
			}
		}
		fn := funcName(c.Name)
		fmt.Fprintf(&b, "\n%s() {\n", fn)
		b.WriteString("  local cur=\"${COMP_WORDS[COMP_CWORD]}\" prev=\"${COMP_WORDS[COMP_CWORD-1]}\" path=\"\" w i skip=\n")
		// --flag=value: bash makes "=" a word of its own (COMP_WORDBREAKS).
		b.WriteString("  if [ \"$cur\" = \"=\" ]; then cur=; elif [ \"$prev\" = \"=\" ] && [ \"$COMP_CWORD\" -ge 2 ]; then prev=\"${COMP_WORDS[COMP_CWORD-2]}\"; fi\n")
		fmt.Fprintf(&b, "  local valued=\" %s \" known=\"|%s|\"\n", strings.Join(sortedKeys(valued), " "), strings.Join(known, "|"))
		b.WriteString(`  for ((i = 1; i < COMP_CWORD; i++)); do
    w="${COMP_WORDS[i]}"
    if [ -n "$skip" ]; then skip=; continue; fi
    case "$w" in
      --*=*) ;;
      --*) case "$valued" in *" $w "*) skip=1 ;; esac ;;
      *) case "$known" in *"|${path:+$path }$w|"*) path="${path:+$path }$w" ;; esac ;;
    esac
  done
  case "$path" in
`)
		for _, n := range nodes {
			fmt.Fprintf(&b, "    %s)\n", shell.Quote(n.path))
			b.WriteString("      case \"$prev\" in\n")
			for _, f := range visibleFlags(n.cmd) {
				switch f.Completes() {
				case "values":
					fmt.Fprintf(&b, "        --%s) COMPREPLY=($(compgen -W %s -- \"$cur\")); return ;;\n", f.Name, shell.Quote(strings.Join(f.Values, " ")))
				case "dir", "file":
					// One name per line, quoted by bash: names with spaces stay whole.
					fmt.Fprintf(&b, "        --%s) local IFS=$'\\n'; compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -%c -- \"$cur\")); return ;;\n", f.Name, f.Completes()[0])
				default:
					if f.kind != Bool {
						fmt.Fprintf(&b, "        --%s) return ;;\n", f.Name)
					}
				}
			}
			b.WriteString("      esac\n")
			words := []string{}
			for _, f := range visibleFlags(n.cmd) {
				words = append(words, "--"+f.Name)
			}
			for _, s := range n.cmd.Subs {
				words = append(words, s.Name)
			}
			words = append(words, n.cmd.ArgValues...)
			fmt.Fprintf(&b, "      COMPREPLY=($(compgen -W %s -- \"$cur\")) ;;\n", shell.Quote(strings.Join(words, " ")))
		}
		b.WriteString("  esac\n}\n")
		fmt.Fprintf(&b, "complete -o default -F %s %s\n", fn, c.Name)
	}
	return b.String()
}

func zshCompletion(cmds []*Command) string {
	var names []string
	for _, c := range cmds {
		names = append(names, c.Name)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "#compdef %s\n# zsh completion for docker2vm's commands (generated: docker2vm completion zsh)\n", strings.Join(names, " "))
	for _, c := range cmds {
		for _, n := range walk(c) {
			fn := funcName(c.Name, n.path)
			fmt.Fprintf(&b, "\n%s() {\n", fn)
			if len(n.cmd.Subs) > 0 {
				b.WriteString("  local state line\n  _arguments -C '1: :->cmd' '*:: :->args'\n  case $state in\n    cmd)\n      _values command")
				for _, s := range n.cmd.Subs {
					fmt.Fprintf(&b, " %s", zshQuote(s.Name+"["+zshDesc(s.Short)+"]"))
				}
				b.WriteString(" ;;\n    args)\n      case $line[1] in\n")
				for _, s := range n.cmd.Subs {
					p := s.Name
					if n.path != "" {
						p = n.path + " " + s.Name
					}
					fmt.Fprintf(&b, "        %s) %s ;;\n", s.Name, funcName(c.Name, p))
				}
				b.WriteString("      esac ;;\n  esac\n}\n")
				continue
			}
			b.WriteString("  _arguments -s")
			for _, f := range visibleFlags(n.cmd) {
				spec := "--" + f.Name + "[" + zshDesc(f.Usage) + "]"
				if f.kind == Repeat {
					spec = "*" + spec
				}
				switch f.Completes() {
				case "values":
					spec += ":" + f.Arg + ":(" + strings.Join(f.Values, " ") + ")"
				case "dir":
					spec += ":" + f.Arg + ":_files -/"
				case "file":
					spec += ":" + f.Arg + ":_files"
				default:
					if f.kind != Bool {
						spec += ":" + placeholder(f) + ": "
					}
				}
				fmt.Fprintf(&b, " \\\n    %s", zshQuote(spec))
			}
			if len(n.cmd.Args) > 0 {
				spec := "1:" + n.cmd.Args[0] + ":"
				if len(n.cmd.ArgValues) > 0 {
					spec += "(" + strings.Join(n.cmd.ArgValues, " ") + ")"
				} else {
					spec += " "
				}
				fmt.Fprintf(&b, " \\\n    %s", zshQuote(spec))
			}
			b.WriteString("\n}\n")
		}
	}
	b.WriteString("\ncase $service in\n")
	for _, c := range cmds {
		fmt.Fprintf(&b, "  %s) %s \"$@\" ;;\n", c.Name, funcName(c.Name, ""))
	}
	b.WriteString("esac\n")
	return b.String()
}

func fishCompletion(cmds []*Command) string {
	var b strings.Builder
	b.WriteString("# fish completion for docker2vm's commands (generated: docker2vm completion fish)\n")
	for _, c := range cmds {
		fmt.Fprintf(&b, "\ncomplete -c %s -f\n", c.Name)
		for _, n := range walk(c) {
			cond := fishCondition(c, n)
			for _, s := range n.cmd.Subs {
				fmt.Fprintf(&b, "complete -c %s -n %s -a %s -d %s\n", c.Name, fishQuote(cond), s.Name, fishQuote(s.Short))
			}
			for _, v := range n.cmd.ArgValues {
				fmt.Fprintf(&b, "complete -c %s -n %s -a %s\n", c.Name, fishQuote(cond), v)
			}
			for _, f := range visibleFlags(n.cmd) {
				line := fmt.Sprintf("complete -c %s -n %s -l %s -d %s", c.Name, fishQuote(cond), f.Name, fishQuote(f.Usage))
				switch f.Completes() {
				case "values":
					line += " -x -a " + fishQuote(strings.Join(f.Values, " "))
				case "dir":
					line += " -x -a '(__fish_complete_directories)'"
				case "file":
					line += " -r -F"
				default:
					if f.kind != Bool {
						line += " -x"
					}
				}
				b.WriteString(line + "\n")
			}
		}
	}
	return b.String()
}

// fishCondition is true when the words typed so far name exactly n's
// subcommand path.
func fishCondition(root *Command, n node) string {
	var subs []string
	for _, m := range walk(root) {
		if m.path != "" {
			parts := strings.Split(m.path, " ")
			subs = append(subs, parts[len(parts)-1])
		}
	}
	if n.path == "" {
		if len(subs) == 0 {
			return "true"
		}
		return "not __fish_seen_subcommand_from " + strings.Join(slices.Compact(slices.Sorted(slices.Values(subs))), " ")
	}
	parts := strings.Split(n.path, " ")
	var conds []string
	for _, p := range parts {
		conds = append(conds, "__fish_seen_subcommand_from "+p)
	}
	// Not yet in a deeper subcommand of n.
	var deeper []string
	for _, s := range n.cmd.Subs {
		deeper = append(deeper, s.Name)
	}
	if len(deeper) > 0 {
		conds = append(conds, "not __fish_seen_subcommand_from "+strings.Join(deeper, " "))
	}
	return strings.Join(conds, "; and ")
}

func sortedKeys(m map[string]bool) []string {
	var k []string
	for x := range m {
		k = append(k, x)
	}
	sort.Strings(k)
	return k
}

func fishQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

func zshQuote(s string) string { return shell.Quote(s) }

// zshDesc escapes what _arguments and _values give a meaning to.
func zshDesc(s string) string {
	return strings.NewReplacer("[", `\[`, "]", `\]`, ":", `\:`).Replace(s)
}
