package repocheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// qualified is a backquoted Go identifier qualified by a package or a type:
// `confine.MaxHops`, `image.Resolve()`, `Image.OpenLayer`,
// `lock.File.Remove`.
var qualified = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9]*)\.([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?(?:\(\))?$`)

// goNames are what the module's packages declare: by package name, its
// top-level identifiers; and by type name, its methods and fields.
type goNames struct {
	pkgs  map[string]map[string]bool
	types map[string]map[string]bool
}

func declared(t *testing.T, top string) goNames {
	t.Helper()
	n := goNames{pkgs: map[string]map[string]bool{}, types: map[string]map[string]bool{}}
	add := func(m map[string]map[string]bool, k, v string) {
		if m[k] == nil {
			m[k] = map[string]bool{}
		}
		m[k][v] = true
	}
	fset := token.NewFileSet()
	walk(t, top, false, func(path string, d fs.DirEntry) {
		if !strings.HasSuffix(path, ".go") {
			return
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		pkg := f.Name.Name
		add(n.pkgs, pkg, "")
		for _, decl := range f.Decls {
			switch d := decl.(type) {
			case *ast.FuncDecl:
				if d.Recv == nil {
					add(n.pkgs, pkg, d.Name.Name)
					continue
				}
				typ := d.Recv.List[0].Type
				if s, ok := typ.(*ast.StarExpr); ok {
					typ = s.X
				}
				if ix, ok := typ.(*ast.IndexExpr); ok {
					typ = ix.X
				}
				if id, ok := typ.(*ast.Ident); ok {
					add(n.types, id.Name, d.Name.Name)
				}
			case *ast.GenDecl:
				for _, spec := range d.Specs {
					switch s := spec.(type) {
					case *ast.ValueSpec:
						for _, id := range s.Names {
							add(n.pkgs, pkg, id.Name)
						}
					case *ast.TypeSpec:
						add(n.pkgs, pkg, s.Name.Name)
						if st, ok := s.Type.(*ast.StructType); ok {
							for _, fl := range st.Fields.List {
								for _, id := range fl.Names {
									add(n.types, s.Name.Name, id.Name)
								}
							}
						}
					}
				}
			}
		}
	})
	return n
}

// resolves reports whether tok names something the module declares; ours
// is false when tok is not one of the module's names at all (another
// language's, or another package's: `fs.copyFileSync`, `os.Stat`).
func (n goNames) resolves(tok string) (found, ours bool) {
	m := qualified.FindStringSubmatch(tok)
	if m == nil {
		return false, false
	}
	first, second, third := m[1], m[2], m[3]
	// pkg.Exported only: `rootfs.ext4` is a file and `source.path` a JSON
	// field, though rootfs and source are package names.
	if decls, ok := n.pkgs[first]; ok && first[0] >= 'a' && first[0] <= 'z' && second[0] >= 'A' && second[0] <= 'Z' {
		if !decls[second] {
			return false, true
		}
		if third != "" {
			return n.types[second][third], true
		}
		return true, true
	}
	if methods, ok := n.types[first]; ok && first[0] >= 'A' && first[0] <= 'Z' && third == "" {
		return methods[second], true
	}
	return false, false
}

// TestCitedIdentifiersExist: the Go identifiers that the documents and
// the code's comments name in backquotes, qualified by one of the
// module's package names or types (`confine.MaxHops`, `Image.OpenLayer`),
// exist. Names of other packages and languages are left alone.
func TestCitedIdentifiersExist(t *testing.T) {
	top := root(t)
	names := declared(t, top)
	checked := 0
	check := func(where, text string) {
		for _, m := range backquoted.FindAllStringSubmatch(text, -1) {
			found, ours := names.resolves(m[1])
			if !ours {
				continue
			}
			checked++
			if !found {
				t.Errorf("%s names `%s`, which the module does not declare", where, m[1])
			}
		}
	}
	docs, _ := filepath.Glob(filepath.Join(top, "docs", "*.md"))
	for _, doc := range append(docs, filepath.Join(top, "README.md"), filepath.Join(top, "BENCHMARKS.md")) {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		check(rel(top, token.Position{Filename: doc}), string(b))
	}
	fset := token.NewFileSet()
	walk(t, top, false, func(path string, d fs.DirEntry) {
		if !strings.HasSuffix(path, ".go") {
			return
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments|parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, cg := range f.Comments {
			check(rel(top, fset.Position(cg.Pos())), cg.Text())
		}
	})
	if checked < 20 {
		t.Errorf("only %d identifiers checked: is the pattern still right?", checked)
	}
	t.Logf("%d identifiers checked", checked)
}
