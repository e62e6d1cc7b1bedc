// Package cli holds what both commands share: the flag grammar of the
// original docker2vm, error rendering with hints, exit codes and progress
// output on stderr.
package cli

import (
	"fmt"
	"sort"
	"strings"

	"github.com/docker2vm/docker2vm/hint"
)

// Kind says how a flag takes values.
type Kind int

const (
	// String flags take one value and may be given once.
	String Kind = iota
	// Bool flags take no value (`--flag`); `--flag=true|false` is accepted.
	Bool
	// Repeat flags take one value and may be given many times.
	Repeat
)

// Flag describes one long option and the variable it sets. Commands
// declare their flags with StringVar, OptionalVar, BoolVar and ListVar,
// each bound to a field of the command's own: parsing sets the fields, and
// the command reads them, never a flag by its name.
type Flag struct {
	Name  string // without the leading dashes
	Arg   string // placeholder shown in usage, e.g. "PATH"
	Usage string
	// Values are the values the flag takes, when it takes one of a few
	// (shell completion offers them).
	Values []string
	// Hidden flags are accepted but not listed (deprecated spellings).
	Hidden bool
	// Short is a one-letter spelling ("f" for -f), and Aliases are other
	// long ones ("output" for --out): docker's, where the meaning is the
	// same. Both are read as the flag itself.
	Short   string
	Aliases []string
	// kind follows from dst, the variable the flag sets, of the type its
	// constructor takes: *string or *Optional (String), *bool (Bool),
	// *[]string (Repeat).
	kind Kind
	dst  any
}

// Kind says how the flag takes values.
func (f Flag) Kind() Kind { return f.kind }

// Optional is the value of a flag that may be left out: Set tells a flag
// given an empty value (--size=) from one not given at all.
type Optional struct {
	Value string
	Set   bool
}

// Or returns the value given, or def when the flag was not given.
func (o Optional) Or(def string) string {
	if o.Set {
		return o.Value
	}
	return def
}

// StringVar is a flag of one value, stored in *p ("" when not given).
func StringVar(p *string, name, arg, usage string) Flag {
	return Flag{Name: name, kind: String, Arg: arg, Usage: usage, dst: p}
}

// OptionalVar is a flag of one value, stored in *p with whether it was
// given: for flags whose absence means something an empty value does not.
func OptionalVar(p *Optional, name, arg, usage string) Flag {
	return Flag{Name: name, kind: String, Arg: arg, Usage: usage, dst: p}
}

// BoolVar is a flag without a value, stored in *p.
func BoolVar(p *bool, name, usage string) Flag {
	return Flag{Name: name, kind: Bool, Usage: usage, dst: p}
}

// ListVar is a flag that may be given many times, its values stored in *p
// in order (nil when not given).
func ListVar(p *[]string, name, arg, usage string) Flag {
	return Flag{Name: name, kind: Repeat, Arg: arg, Usage: usage, dst: p}
}

// WithValues returns f taking one of values (shell completion offers them).
func (f Flag) WithValues(values ...string) Flag {
	f.Values = values
	return f
}

// WithShort returns f also spelled -letter.
func (f Flag) WithShort(letter string) Flag {
	f.Short = letter
	return f
}

// reset gives f's variable the value of a flag not given, so that every
// parse starts from the same state. A Flag written as a literal sets no
// variable: it would be accepted and ignored, so it is refused here, on
// the first parse of the command's flags, like a flag redefined in the
// standard flag package.
func (f Flag) reset() {
	switch p := f.dst.(type) {
	case *string:
		*p = ""
	case *Optional:
		*p = Optional{}
	case *bool:
		*p = false
	case *[]string:
		*p = nil
	default:
		panic(fmt.Sprintf("cli: flag --%s sets no variable: declare it with StringVar, OptionalVar, BoolVar or ListVar", f.Name))
	}
}

// set stores a value given on the command line in f's variable.
func (f Flag) set(value string) {
	switch p := f.dst.(type) {
	case *string:
		*p = value
	case *Optional:
		*p = Optional{Value: value, Set: true}
	case *[]string:
		*p = append(*p, value)
	}
}

// Completes says what a shell should complete the flag's value with:
// "values" (Values), "dir", "file", or "" (anything).
func (f Flag) Completes() string {
	switch {
	case len(f.Values) > 0:
		return "values"
	case f.kind == Bool:
		return ""
	case f.Arg == "DIR":
		return "dir"
	case strings.HasPrefix(f.Arg, "PATH"):
		return "file"
	}
	return ""
}

// ErrHelp is returned by Parse when --help or -h was given.
var ErrHelp = fmt.Errorf("help requested")

// ErrVersion is returned by Parse when --version was given.
var ErrVersion = fmt.Errorf("version requested")

// Parse reads args ("--flag value", "--flag=value", "--bool") against
// specs, setting the variables they are bound to. It rejects unknown
// flags, stray positional arguments, missing values and single-valued
// flags given twice, each with a message naming the flag.
func Parse(args []string, specs []Flag) error {
	_, err := parse(args, specs, 0)
	return err
}

// parse is Parse allowing up to maxArgs positional arguments, which it
// returns.
//
// Long: one loop over the arguments, with the spellings of a flag (--name,
// --name=value, -x, -xvalue, aliases) and their errors in one place.
func parse(args []string, specs []Flag, maxArgs int) ([]string, error) {
	byName := make(map[string]Flag, len(specs))
	byShort := map[string]Flag{}
	for _, s := range specs {
		byName[s.Name] = s
		for _, a := range s.Aliases {
			byName[a] = s
		}
		if s.Short != "" {
			byShort[s.Short] = s
		}
	}
	for _, s := range specs {
		s.reset()
	}
	var positional []string
	given := map[string]bool{} // single-valued flags seen, by name
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--help" || arg == "-h" {
			return nil, ErrHelp
		}
		if arg == "--version" {
			return nil, ErrVersion
		}
		var name, value string
		var hasValue bool
		var spec Flag
		switch {
		case len(arg) >= 2 && arg[0] == '-' && arg[1] != '-':
			// -f PATH, -f=PATH, -fPATH
			sp, ok := byShort[arg[1:2]]
			if !ok {
				return nil, &hint.Error{Msg: fmt.Sprintf("Unknown flag %s.", arg[:2]),
					Fixes: append(suggestShort(arg[1:2]), "Flags take the form --name value or --name=value.", "Run with --help to see the accepted flags.")}
			}
			spec, name = sp, sp.Name
			if rest := arg[2:]; rest != "" {
				value, hasValue = strings.TrimPrefix(rest, "="), true
			}
		case strings.HasPrefix(arg, "--") && arg != "--":
			var alias string
			alias, value, hasValue = strings.Cut(arg[2:], "=")
			sp, ok := byName[alias]
			if !ok {
				return nil, &hint.Error{
					Msg:   fmt.Sprintf("Unknown flag --%s.", alias),
					Fixes: append(suggest(alias, specs), "Run with --help to see the accepted flags."),
				}
			}
			spec, name = sp, sp.Name
		case arg != "--" && len(positional) < maxArgs:
			positional = append(positional, arg)
			continue
		default:
			fixes := []string{"Flags take the form --name value or --name=value.", "Run with --help to see the accepted flags."}
			if maxArgs > 0 {
				fixes = append([]string{fmt.Sprintf("This command takes at most %d argument(s) besides its flags.", maxArgs)}, fixes...)
			}
			return nil, &hint.Error{Msg: fmt.Sprintf("Unexpected argument %q.", arg), Fixes: fixes}
		}
		if spec.kind == Bool {
			b := true
			if hasValue {
				switch strings.ToLower(value) {
				case "true", "1", "yes":
				case "false", "0", "no":
					b = false
				default:
					return nil, &hint.Error{Msg: fmt.Sprintf("Flag --%s takes no value (got %q).", name, value),
						Fixes: []string{fmt.Sprintf("Write --%s on its own.", name)}}
				}
			}
			if err := once(given, name); err != nil {
				return nil, err
			}
			*spec.dst.(*bool) = b
			continue
		}
		if !hasValue {
			if i+1 >= len(args) || (strings.HasPrefix(args[i+1], "--") && len(args[i+1]) > 2) {
				return nil, &hint.Error{Msg: fmt.Sprintf("Flag --%s requires a value.", name),
					Fixes: []string{fmt.Sprintf("Write --%s %s.", name, placeholder(spec))}}
			}
			i++
			value = args[i]
		}
		if spec.kind == String {
			if err := once(given, name); err != nil {
				return nil, err
			}
		}
		spec.set(value)
	}
	return positional, nil
}

// once records that the single-valued flag name was given, and refuses it
// a second time.
func once(given map[string]bool, name string) error {
	if given[name] {
		return &hint.Error{Msg: fmt.Sprintf("Flag --%s was given more than once.", name),
			Fixes: []string{fmt.Sprintf("Pass --%s once.", name)}}
	}
	given[name] = true
	return nil
}

func placeholder(f Flag) string {
	if f.Arg != "" {
		return f.Arg
	}
	return "VALUE"
}

// suggestShort says what docker's one-letter flags that this command
// does not take are spelled as here, if anything.
func suggestShort(letter string) []string {
	switch letter {
	case "q":
		return []string{"Use --progress quiet."}
	case "v":
		return []string{"Use --version, or --progress plain for more output."}
	}
	return nil
}

// suggest names flags close to an unknown one (a typo or a missing dash).
func suggest(name string, specs []Flag) []string {
	var best []string
	for _, s := range specs {
		if s.Hidden {
			continue
		}
		if d := editDistance(name, s.Name); d <= 2 || strings.HasPrefix(s.Name, name) {
			best = append(best, s.Name)
		}
	}
	sort.Strings(best)
	if len(best) == 0 {
		return nil
	}
	return []string{"Did you mean --" + strings.Join(best, " or --") + "?"}
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Usage renders the flag table for --help.
func Usage(all []Flag) string {
	var specs []Flag
	for _, s := range all {
		if !s.Hidden {
			specs = append(specs, s)
		}
	}
	var b strings.Builder
	width := 0
	cols := make([]string, len(specs))
	for i, s := range specs {
		c := "--" + s.Name
		if s.Short != "" {
			c = "-" + s.Short + ", " + c
		}
		if s.kind != Bool {
			c += " " + placeholder(s)
		}
		cols[i] = c
		width = max(width, len(c))
	}
	for i, s := range specs {
		fmt.Fprintf(&b, "  %-*s  %s\n", width, cols[i], s.Usage)
	}
	return b.String()
}
