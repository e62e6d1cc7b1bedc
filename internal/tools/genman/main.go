// Command genman writes the man pages of docker2vm's commands, generated
// from the same definitions as their --help: `make man`.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker2vm/docker2vm/internal/app"
	"github.com/docker2vm/docker2vm/internal/cli"
)

func main() {
	out := flag.String("out", "man", "directory to write NAME.1 into")
	flag.Parse()
	// SOURCE_DATE_EPOCH dates the pages reproducibly.
	date := time.Now().UTC().Format("2006-01-02")
	if v := os.Getenv("SOURCE_DATE_EPOCH"); v != "" {
		var sec int64
		fmt.Sscan(v, &sec)
		date = time.Unix(sec, 0).UTC().Format("2006-01-02")
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "genman:", err)
		os.Exit(1)
	}
	for _, c := range app.Commands() {
		p := filepath.Join(*out, strings.ReplaceAll(c.Name, " ", "-")+".1")
		if err := os.WriteFile(p, []byte(cli.Man(c, date)), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "genman:", err)
			os.Exit(1)
		}
		fmt.Println(p)
	}
}
