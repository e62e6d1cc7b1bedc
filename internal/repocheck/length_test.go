package repocheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// maxLines is the length of a function of the commands' code past which
// its doc comment must say why it is long, in a paragraph that starts
// "Long:" (one case per message type, a format's fields in their order...).
const maxLines = 80

// TestLongFunctionsSayWhy: every function of the packages the commands
// are built from (go list -deps ./cmd/...) that is longer than maxLines
// lines explains its length in its doc comment.
func TestLongFunctionsSayWhy(t *testing.T) {
	top := root(t)
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{end}}", "./cmd/...")
	cmd.Dir = top
	out, err := cmd.Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, dir := range strings.Fields(string(out)) {
		if !strings.HasPrefix(dir, top+string(filepath.Separator)) {
			continue // a dependency's
		}
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		for _, path := range files {
			if strings.HasSuffix(path, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, path, nil, parser.ParseComments|parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range f.Decls {
				fd, ok := d.(*ast.FuncDecl)
				if !ok || fd.Body == nil {
					continue
				}
				checked++
				n := fset.Position(fd.End()).Line - fset.Position(fd.Pos()).Line
				if n <= maxLines {
					continue
				}
				if fd.Doc == nil || !strings.Contains(fd.Doc.Text(), "Long:") {
					t.Errorf("%s: %s is %d lines long and its doc comment does not say why (a paragraph starting \"Long:\")", rel(top, fset.Position(fd.Pos())), fd.Name.Name, n)
				}
			}
		}
	}
	if checked < 500 {
		t.Errorf("only %d functions checked", checked)
	}
}
