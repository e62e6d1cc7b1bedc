package apptest

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker2vm/docker2vm/convert"
	"github.com/docker2vm/docker2vm/internal/app"
	"github.com/docker2vm/docker2vm/internal/testenv/gondolintest"
)

// Convert runs oci2gondolin --mode assets on the OCI archive for arch
// with the base bundle base and returns the guest directory.
func Convert(t *testing.T, ociTar, arch, base string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "guest")
	args := []string{"--oci-tar", ociTar, "--platform", "linux/" + arch, "--mode", "assets", "--base", base, "--out", out, "--no-cache", "--quiet"}
	var stdout, stderr bytes.Buffer
	if code := app.OCI2Gondolin().Exec(context.Background(), args, &stdout, &stderr); code != 0 {
		t.Fatalf("oci2gondolin %s: exit %d\n%s", strings.Join(args, " "), code, stderr.String())
	}
	var res convert.Result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("oci2gondolin printed no result: %v\n%s", err, stdout.String())
	}
	return out
}

// RunGuest boots the guest directory with the real Gondolin host, starts
// the service as a user does (vm.exec of /usr/bin/docker2vm-entrypoint
// with app.Env, left running), runs the checks next to it and returns what
// they and the service printed.
func RunGuest(t *testing.T, guest string, app App, checks []Check, opts gondolintest.BootOptions) *Observation {
	t.Helper()
	specs := []gondolintest.ExecSpec{{Argv: []string{"/usr/bin/docker2vm-entrypoint"}, Env: app.Env, Background: true}}
	for _, c := range checks {
		specs = append(specs, gondolintest.ExecSpec{Argv: c.Argv})
	}
	rep, err := gondolintest.Run(t, guest, opts, specs...)
	if err != nil {
		t.Fatalf("booting the %s guest: %v\n%s", app.Name, err, tail(rep.Log, 12000))
	}
	if len(rep.Results) != len(specs) {
		t.Fatalf("%d results for %d commands", len(rep.Results), len(specs))
	}
	obs := &Observation{Checks: map[string]Result{}}
	for i, c := range checks {
		r := rep.Results[i+1]
		obs.Checks[c.Name] = Result{Code: r.ExitCode, Output: r.Stdout, Stderr: r.Stderr}
	}
	svc := rep.Results[0]
	obs.Log = svc.Stdout + svc.Stderr
	if svc.ExitCode != -1 {
		t.Errorf("the %s service exited (status %d) before the checks ended:\n%s", app.Name, svc.ExitCode, obs.Log)
	}
	return obs
}
