package convert

import (
	"io"
	"os"
	"runtime/pprof"
	"runtime/trace"
)

// startProfile is a hidden hook for performance work: with
// DOCKER2VM_CPUPROFILE=path set, Run writes a CPU profile of itself there
// (go tool pprof path); with DOCKER2VM_TRACE=path, an execution trace (go
// tool trace path), which shows how the pipeline's stages share the cores.
// It returns the function that stops them.
func startProfile() func() {
	stopCPU := startTo("DOCKER2VM_CPUPROFILE", pprof.StartCPUProfile, pprof.StopCPUProfile)
	stopTrace := startTo("DOCKER2VM_TRACE", trace.Start, trace.Stop)
	return func() {
		stopCPU()
		stopTrace()
	}
}

// startTo starts a recorder writing to the file named by the environment
// variable env, if set; it returns what stops it and closes the file.
func startTo(env string, start func(io.Writer) error, stop func()) func() {
	p := os.Getenv(env)
	if p == "" {
		return func() {}
	}
	f, err := os.Create(p)
	if err != nil {
		return func() {}
	}
	if err := start(f); err != nil {
		f.Close()
		return func() {}
	}
	return func() {
		stop()
		f.Close()
	}
}
