package apptest

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestContractDifferences: the table in docs/gondolin-contract.md parses,
// and names only checks the tests run.
func TestContractDifferences(t *testing.T) {
	diffs, err := ReadDifferences(ContractDoc())
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, c := range CommonChecks(App{}) {
		names[c.Name] = true
	}
	for _, a := range Apps {
		for _, c := range a.Checks {
			names[c.Name] = true
		}
	}
	for _, d := range diffs {
		if !names[d.Check] {
			t.Errorf("the contract allows a difference in %q, which no test runs", d.Check)
		}
		if d.Why == "" {
			t.Errorf("%s %s: no reason given", d.Check, d.Line)
		}
	}
}

func TestReadDifferences(t *testing.T) {
	doc := filepath.Join(t.TempDir(), "doc.md")
	write := func(s string) {
		if err := os.WriteFile(doc, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("# x\n" + DifferencesHeading + "\n\n| check | line | why |\n|---|---|---|\n| `svc` | `^a(b\\|c)$` | because |\n\n## next\n| `other` | `x` | y |\n")
	diffs, err := ReadDifferences(doc)
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) != 1 || diffs[0].Check != "svc" || !diffs[0].Line.MatchString("ac") || diffs[0].Line.MatchString("a|c") || diffs[0].Why != "because" {
		t.Fatalf("diffs = %+v", diffs)
	}
	for _, bad := range []string{
		DifferencesHeading + "\n| `svc` | ^a$ | why |\n",
		DifferencesHeading + "\n| `svc` | `(` | why |\n",
		DifferencesHeading + "\n| `svc` | `a` |\n",
		"no table here\n",
	} {
		write(bad)
		if _, err := ReadDifferences(doc); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestCompare(t *testing.T) {
	diffs := []Difference{{Check: "svc", Line: mustRe(t, "^env X=")}}
	c := Check{Name: "svc", Want: "uid 0"}
	ok := Result{Output: "uid 0\nenv A=1\n"}
	for _, tc := range []struct {
		name             string
		guest, container Result
		problems         []string
	}{
		{"same", ok, ok, nil},
		{"an allowed line", Result{Output: "uid 0\nenv A=1\nenv X=2\n"}, ok, nil},
		{"a line only in the guest", Result{Output: "uid 0\nenv A=2\n"}, ok, []string{`only in the guest: "env A=2"`, `only in the container: "env A=1"`}},
		{"a repeated line counts", Result{Output: "uid 0\nenv A=1\nenv A=1\n"}, ok, []string{`only in the guest: "env A=1"`}},
		{"a failure", Result{Code: 1, Output: "uid 0\nenv A=1\n", Stderr: "boom"}, ok, []string{"in the guest: exit 1: uid 0\nenv A=1\nboom"}},
		{"the expected text missing both ways", Result{Output: "env A=1\n"}, Result{Output: "env A=1\n"},
			[]string{"in the container: output lacks \"uid 0\":\nenv A=1\n", "in the guest: output lacks \"uid 0\":\nenv A=1\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			used := map[*Difference]bool{}
			got := Compare(c, tc.guest, tc.container, diffs, used)
			if !slices.Equal(got, tc.problems) {
				t.Fatalf("problems\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.problems, "\n"))
			}
		})
	}
}

func mustRe(t *testing.T, s string) *regexp.Regexp {
	t.Helper()
	re, err := regexp.Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	return re
}
