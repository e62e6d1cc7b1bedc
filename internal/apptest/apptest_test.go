//go:build linux

package apptest

import (
	"strings"
	"testing"

	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/testenv/gondolintest"
)

// TestApplications builds each application image, runs it under runc as
// Docker would and converted in a Gondolin guest, and compares what the
// same probes see: the service answering on 127.0.0.1 and localhost, its
// logs, its process's user, directory, limits and environment, and what the
// runtime gives every container. A difference fails the test unless
// docs/gondolin-contract.md lists it with its reason.
func TestApplications(t *testing.T) {
	require.Integration(t, "builds application images with BuildKit and runs them under runc and in Gondolin guests")
	diffs, err := ReadDifferences(ContractDoc())
	if err != nil {
		t.Fatal(err)
	}
	b := NewBuilder(t)
	used := map[*Difference]bool{}
	for _, app := range Apps {
		for _, arch := range app.Arches {
			t.Run(app.Name+"/"+arch, func(t *testing.T) {
				oci := b.Image(t, app, arch)
				base := gondolintest.BaseBundleArch(t, arch)
				// The app's own checks first: they wait for the service to be up.
				checks := append(append([]Check{}, app.Checks...), CommonChecks(app)...)
				guest := RunGuest(t, Convert(t, oci, arch, base), app, checks, gondolintest.BootOptions{})
				hostname := strings.TrimSpace(guest.Checks["hostname"].Output)
				container := RunRunc(t, oci, app, hostname, checks)
				for _, c := range checks {
					for _, p := range Compare(c, guest.Checks[c.Name], container.Checks[c.Name], diffs, used) {
						t.Errorf("%s: %s", c.Name, p)
					}
				}
				for name, obs := range map[string]*Observation{"container": container, "guest": guest} {
					if !strings.Contains(obs.Log, app.Log) {
						t.Errorf("the service's output in the %s lacks %q:\n%s", name, app.Log, tail(obs.Log, 4000))
					}
				}
				if t.Failed() {
					t.Logf("the service's output in the guest:\n%s\nin the container:\n%s", tail(guest.Log, 4000), tail(container.Log, 4000))
				}
			})
		}
	}
}
