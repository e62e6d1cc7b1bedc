package repocheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// external are test functions of other projects that comments name on
// purpose.
var external = map[string]string{
	"TestBreakouts": "containerd's archive tests, whose symlink cases rootfs's merge tests adapt",
}

// pkg is what one directory's Go files declare and cite.
type pkg struct {
	dir      string
	tests    map[string]bool // test, fuzz, benchmark and example functions
	cases    map[string]bool // table case names and t.Run names
	cited    []citation      // (test: "...") case citations
	funcRefs []citation      // TestX, FuzzX, BenchmarkX named in comments
}

type citation struct {
	name string
	pos  token.Position
}

var (
	// caseCite matches `test: "a"` and `tests: "a", "b", and "c"`.
	caseCite  = regexp.MustCompile(`\btests?: ("[^"]*"(?:,?\s*(?:and\s+)?"[^"]*")*)`)
	quoted    = regexp.MustCompile(`"([^"]*)"`)
	funcRef   = regexp.MustCompile(`\b(?:Test|Fuzz|Benchmark)[A-Z][A-Za-z0-9_]*`)
	docCite   = regexp.MustCompile(`\bdocs/[A-Za-z0-9_.-]+\.md\b`)
	skipNames = map[string]bool{".git": true, "node_modules": true}
)

// root is the module's root directory.
func root(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// walk calls f for every file of the module: not of nested modules, not
// under hidden directories or node_modules, not under testdata unless
// testdata, and not of this package, whose comments describe citations
// rather than make them.
func walk(t *testing.T, top string, testdata bool, f func(path string, d fs.DirEntry)) {
	t.Helper()
	self, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(top, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != top && (skipNames[d.Name()] || strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" && !testdata || path == self) {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil && path != top {
				return filepath.SkipDir // another module (tools/buildkit)
			}
			return nil
		}
		f(path, d)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// parsePackages reads every Go file of the module, by directory.
func parsePackages(t *testing.T, top string) map[string]*pkg {
	t.Helper()
	fset := token.NewFileSet()
	pkgs := map[string]*pkg{}
	walk(t, top, false, func(path string, d fs.DirEntry) {
		if !strings.HasSuffix(path, ".go") {
			return
		}
		file, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Dir(path)
		p := pkgs[dir]
		if p == nil {
			p = &pkg{dir: dir, tests: map[string]bool{}, cases: map[string]bool{}}
			pkgs[dir] = p
		}
		isTest := strings.HasSuffix(path, "_test.go")
		for _, cg := range file.Comments {
			text := strings.Join(strings.Fields(cg.Text()), " ")
			pos := fset.Position(cg.Pos())
			for _, m := range caseCite.FindAllStringSubmatch(text, -1) {
				for _, q := range quoted.FindAllStringSubmatch(m[1], -1) {
					p.cited = append(p.cited, citation{q[1], pos})
				}
			}
			for _, name := range funcRef.FindAllString(text, -1) {
				p.funcRefs = append(p.funcRefs, citation{name, pos})
			}
		}
		if !isTest {
			return
		}
		ast.Inspect(file, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.FuncDecl:
				if n.Recv == nil && funcRef.MatchString(n.Name.Name) || strings.HasPrefix(n.Name.Name, "Example") {
					p.tests[n.Name.Name] = true
				}
			case *ast.KeyValueExpr:
				if k, ok := n.Key.(*ast.Ident); ok && strings.EqualFold(k.Name, "name") {
					if s, ok := stringLit(n.Value); ok {
						p.cases[s] = true
					}
				}
			case *ast.CallExpr:
				if sel, ok := n.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "Run" && len(n.Args) == 2 {
					if s, ok := stringLit(n.Args[0]); ok {
						p.cases[s] = true
					}
				}
			}
			return true
		})
	})
	return pkgs
}

func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

// TestCitedTestsExist: every test case a comment cites, and every test
// function one names, exists in the comment's package.
func TestCitedTestsExist(t *testing.T) {
	top := root(t)
	pkgs := parsePackages(t, top)
	dirs := make([]string, 0, len(pkgs))
	for d := range pkgs {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs)
	cases := 0
	for _, d := range dirs {
		p := pkgs[d]
		for _, c := range p.cited {
			cases++
			if !p.cases[c.name] && !p.tests[c.name] {
				t.Errorf("%s: cites test case %q, which no _test.go file of %s declares", rel(top, c.pos), c.name, rel(top, token.Position{Filename: d}))
			}
		}
		for _, c := range p.funcRefs {
			if !p.tests[c.name] && external[c.name] == "" {
				t.Errorf("%s: names %s, which is no test function of %s", rel(top, c.pos), c.name, rel(top, token.Position{Filename: d}))
			}
		}
	}
	if cases == 0 {
		t.Error("no test case citations found: the pattern no longer matches how comments cite tests")
	}
	t.Logf("%d test case citations checked", cases)
}

// TestCitedDocsExist: every docs/NAME.md that a source file, script,
// Makefile or document cites exists.
func TestCitedDocsExist(t *testing.T) {
	top := root(t)
	seen := 0
	walk(t, top, true, func(path string, d fs.DirEntry) {
		switch filepath.Ext(path) {
		case ".go", ".sh", ".md", ".js", ".mjs", "":
		default:
			return
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range docCite.FindAllString(string(data), -1) {
			seen++
			if _, err := os.Stat(filepath.Join(top, doc)); err != nil {
				t.Errorf("%s cites %s, which does not exist", rel(top, token.Position{Filename: path}), doc)
			}
		}
	})
	if seen == 0 {
		t.Error("no citations of docs/ found")
	}
}

func rel(top string, pos token.Position) string {
	r, err := filepath.Rel(top, pos.Filename)
	if err != nil {
		r = pos.Filename
	}
	if pos.Line > 0 {
		return r + ":" + strconv.Itoa(pos.Line)
	}
	return r
}

var (
	backquoted = regexp.MustCompile("`([^`\n]+)`")
	pathLike   = regexp.MustCompile(`^[a-z][a-z0-9_]*(/[A-Za-z0-9_.*-]+)+/?$`)
)

// TestDocsNameWhatExists: the repository paths and test functions that the
// documents (docs/*.md, README.md, BENCHMARKS.md) name in backquotes exist.
// A path counts as the repository's when its first directory is one.
func TestDocsNameWhatExists(t *testing.T) {
	top := root(t)
	tests := map[string]bool{}
	for _, p := range parsePackages(t, top) {
		for n := range p.tests {
			tests[n] = true
		}
	}
	docs, err := filepath.Glob(filepath.Join(top, "docs", "*.md"))
	if err != nil || len(docs) == 0 {
		t.Fatalf("no docs/*.md: %v", err)
	}
	docs = append(docs, filepath.Join(top, "README.md"), filepath.Join(top, "BENCHMARKS.md"))
	// Build outputs (the directories .gitignore lists as /NAME/: dist/,
	// bin/, man/) are not the repository's, whether or not a build made
	// them here.
	built := map[string]bool{}
	if gi, err := os.ReadFile(filepath.Join(top, ".gitignore")); err == nil {
		for _, l := range strings.Split(string(gi), "\n") {
			if d, ok := strings.CutPrefix(strings.TrimSpace(l), "/"); ok && strings.HasSuffix(d, "/") && !strings.Contains(strings.TrimSuffix(d, "/"), "/") {
				built[strings.TrimSuffix(d, "/")] = true
			}
		}
	}
	checked := 0
	for _, doc := range docs {
		data, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		name := rel(top, token.Position{Filename: doc})
		for _, m := range backquoted.FindAllStringSubmatch(string(data), -1) {
			tok := m[1]
			switch {
			case funcRef.FindString(tok) == tok:
				checked++
				if !tests[tok] {
					t.Errorf("%s names %s, which is no test function of the module", name, tok)
				}
			case pathLike.MatchString(tok):
				first, _, _ := strings.Cut(tok, "/")
				if st, err := os.Stat(filepath.Join(top, first)); err != nil || !st.IsDir() || built[first] {
					continue // not a path of the repository (bin/, out/, a guest's path)
				}
				checked++
				if matches, _ := filepath.Glob(filepath.Join(top, filepath.FromSlash(tok))); len(matches) == 0 {
					t.Errorf("%s names %s, which does not exist", name, tok)
				}
			}
		}
	}
	t.Logf("%d names checked", checked)
}
