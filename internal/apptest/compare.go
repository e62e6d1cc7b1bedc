package apptest

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Difference is one way a converted guest may differ from a container, as
// docs/gondolin-contract.md lists it: in a check's output, a line that
// matches Line may be in one and not the other.
type Difference struct {
	Check string
	Line  *regexp.Regexp
	Why   string
}

// DifferencesHeading is the section of docs/gondolin-contract.md whose
// table lists the allowed differences.
const DifferencesHeading = "## Where a converted guest differs from a container"

// ContractDoc is docs/gondolin-contract.md in the source tree.
func ContractDoc() string {
	return filepath.Join(moduleDir(), "..", "..", "docs", "gondolin-contract.md")
}

// ReadDifferences reads the table under DifferencesHeading: rows
// "| `CHECK` | `REGEXP` | WHY |" (a "|" in REGEXP written "\|").
func ReadDifferences(path string) ([]Difference, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Difference
	in := false
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			in = line == DifferencesHeading
			continue
		}
		if !in || !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		if len(cells) != 3 {
			return nil, fmt.Errorf("%s:%d: want | `check` | `regexp` | why |", path, n)
		}
		check := strings.Trim(strings.TrimSpace(cells[0]), "`")
		pat := strings.TrimSpace(cells[1])
		if !strings.HasPrefix(pat, "`") || !strings.HasSuffix(pat, "`") {
			return nil, fmt.Errorf("%s:%d: the pattern is not in backquotes", path, n)
		}
		// A table cell escapes its pipes.
		re, err := regexp.Compile(strings.ReplaceAll(strings.Trim(pat, "`"), `\|`, "|"))
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		out = append(out, Difference{Check: check, Line: re, Why: strings.TrimSpace(cells[2])})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s has no table under %q", path, DifferencesHeading)
	}
	return out, nil
}

// Compare returns the problems with one check's outcomes: a failure on
// either side, the expected text missing, or a line in one output and not
// the other that no Difference allows. used records the differences that
// allowed a line.
func Compare(c Check, guest, container Result, diffs []Difference, used map[*Difference]bool) []string {
	var problems []string
	for _, side := range []struct {
		name string
		r    Result
	}{{"container", container}, {"guest", guest}} {
		if side.r.Code != 0 {
			problems = append(problems, fmt.Sprintf("in the %s: exit %d: %s%s", side.name, side.r.Code, side.r.Output, side.r.Stderr))
		} else if !strings.Contains(side.r.Output, c.Want) {
			problems = append(problems, fmt.Sprintf("in the %s: output lacks %q:\n%s", side.name, c.Want, side.r.Output))
		}
	}
	onlyG, onlyC := lineDiff(guest.Output, container.Output)
	for _, d := range []struct {
		where string
		lines []string
	}{{"guest", onlyG}, {"container", onlyC}} {
		for _, l := range d.lines {
			if allowed := allow(c.Name, l, diffs); allowed != nil {
				used[allowed] = true
				continue
			}
			problems = append(problems, fmt.Sprintf("only in the %s: %q", d.where, l))
		}
	}
	return problems
}

func allow(check, line string, diffs []Difference) *Difference {
	for i := range diffs {
		if diffs[i].Check == check && diffs[i].Line.MatchString(line) {
			return &diffs[i]
		}
	}
	return nil
}

// lineDiff returns the lines of a not in b and of b not in a, counting
// repeats.
func lineDiff(a, b string) (onlyA, onlyB []string) {
	count := map[string]int{}
	for _, l := range lines(b) {
		count[l]++
	}
	for _, l := range lines(a) {
		if count[l] > 0 {
			count[l]--
			continue
		}
		onlyA = append(onlyA, l)
	}
	left := map[string]int{}
	for _, l := range lines(a) {
		left[l]++
	}
	for _, l := range lines(b) {
		if left[l] > 0 {
			left[l]--
			continue
		}
		onlyB = append(onlyB, l)
	}
	return onlyA, onlyB
}

func lines(s string) []string {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}
