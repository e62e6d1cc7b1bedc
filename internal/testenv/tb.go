// Package testenv holds what the test fixtures in its packages below
// share (the TB they report to, the architectures they build for, their
// cache directory and its lock), and Console, which lets programs use
// them outside `go test`. The fixtures are: test images (imagetest), a
// real registry server (registrytest), a Debian image (debian), the fixture
// Gondolin base bundle and boots under the real Gondolin host
// (gondolintest), and a real BuildKit daemon (buildkittest); qemuuser runs
// the other architecture's programs for them.
//
// Whether a test can run here is decided by internal/require: a missing
// tool or root skips the test, except under CI, where it fails. The
// fixtures that start servers, build fixtures or boot VMs (registrytest.Start,
// debian.ImageArch, gondolintest.BaseBundleArch, gondolintest.Run,
// gondolintest.CLI, gondolintest.RunCLI, buildkittest.Binaries,
// buildkittest.Start) call require.Integration themselves, so a test that
// uses one is an integration test, which -short skips, even if it does not
// say so first.
package testenv

// TB is the part of testing.TB the helpers use. *testing.T satisfies it,
// and so does the demo's console reporter, which lets `make demo` reuse
// the same fixtures outside `go test`.
type TB interface {
	Helper()
	Log(args ...any)
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Skip(args ...any)
	Skipf(format string, args ...any)
	Failed() bool
	Cleanup(func())
	TempDir() string
}
