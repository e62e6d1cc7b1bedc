package testenv

import (
	"fmt"
	"os"
)

// Console is a TB for programs (the demo, the benchmark) that reuse the
// fixtures outside `go test`: logs go to stdout when Verbose, a fatal
// error or a missing tool ends the program after running the cleanups.
type Console struct {
	Name    string // prefixes messages, e.g. "demo"
	Verbose bool
	// Indent prefixes log lines.
	Indent string

	cleanups []func()
	failed   bool
}

func (c *Console) Helper() {}

func (c *Console) Log(args ...any) {
	if c.Verbose {
		fmt.Println(append([]any{c.Indent}, args...)...)
	}
}

func (c *Console) Logf(format string, args ...any) {
	if c.Verbose {
		fmt.Printf(c.Indent+format+"\n", args...)
	}
}

func (c *Console) Errorf(format string, args ...any) {
	c.failed = true
	fmt.Printf(c.Name+": "+format+"\n", args...)
}

func (c *Console) Fatal(args ...any) { c.Fatalf("%s", fmt.Sprint(args...)) }

func (c *Console) Fatalf(format string, args ...any) {
	fmt.Printf(c.Name+" failed: "+format+"\n", args...)
	c.Close()
	os.Exit(1)
}

func (c *Console) Skip(args ...any) { c.Skipf("%s", fmt.Sprint(args...)) }

// Skipf is how a fixture reports a missing tool: outside `go test` that is
// fatal, with the way to install it.
func (c *Console) Skipf(format string, args ...any) {
	fmt.Printf(c.Name+" cannot run: "+format+"\nInstall the tools it needs with `make deps` (as root), then run it again.\n", args...)
	c.Close()
	os.Exit(1)
}

func (c *Console) Failed() bool { return c.failed }

func (c *Console) Cleanup(f func()) { c.cleanups = append(c.cleanups, f) }

func (c *Console) TempDir() string {
	d, err := os.MkdirTemp("", "docker2vm-"+c.Name+"-")
	if err != nil {
		c.Fatal(err)
	}
	c.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// Close runs the cleanups, last registered first.
func (c *Console) Close() {
	for i := len(c.cleanups) - 1; i >= 0; i-- {
		c.cleanups[i]()
	}
	c.cleanups = nil
}
