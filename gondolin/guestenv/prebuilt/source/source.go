// Package source names the sources docker2vm-guestenv is built from and
// hashes them, for the generator that builds package prebuilt's binaries
// and the test that checks those binaries are current.
package source

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// StampVar is the variable the generator sets (-ldflags -X) to the hash.
const StampVar = "github.com/docker2vm/docker2vm/gondolin/guestenv.sourceHash"

// Dirs are the module's directories whose non-test Go files are built into
// the program.
var Dirs = []string{"gondolin/guestenv", "gondolin/guestenv/cmd/docker2vm-guestenv", "internal/mountinfo"}

// Hash is the sha256 (hex) of the program's Go files under root (the
// module root: names and contents) and of the golang.org/x/sys version
// go.mod requires.
func Hash(root string) (string, error) {
	var files []string
	for _, d := range Dirs {
		m, err := filepath.Glob(filepath.Join(root, filepath.FromSlash(d), "*.go"))
		if err != nil {
			return "", err
		}
		for _, f := range m {
			if !strings.HasSuffix(f, "_test.go") {
				files = append(files, f)
			}
		}
	}
	if len(files) == 0 {
		return "", fmt.Errorf("no docker2vm-guestenv sources under %s", root)
	}
	sort.Strings(files)
	h := sha256.New()
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		rel, _ := filepath.Rel(root, f)
		fmt.Fprintf(h, "%s %d\n", filepath.ToSlash(rel), len(data))
		h.Write(data)
	}
	sys, err := requirement(filepath.Join(root, "go.mod"), "golang.org/x/sys")
	if err != nil {
		return "", err
	}
	fmt.Fprintf(h, "golang.org/x/sys %s\n", sys)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// requirement returns the version go.mod requires of module.
func requirement(gomod, module string) (string, error) {
	f, err := os.Open(gomod)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "require "))
		if len(fields) >= 2 && fields[0] == module {
			return fields[1], nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("%s does not require %s", gomod, module)
}

// ModuleRoot is the directory of the go.mod of the module being built.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the docker2vm module")
	}
	return filepath.Dir(gomod), nil
}
