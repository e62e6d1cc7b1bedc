package convert

import (
	"os"
	"runtime/pprof"
)

// startProfile is a hidden hook for performance work: with
// DOCKER2VM_CPUPROFILE=path set, Run writes a CPU profile of itself there
// (go tool pprof path). It returns the function that stops it.
func startProfile() func() {
	p := os.Getenv("DOCKER2VM_CPUPROFILE")
	if p == "" {
		return func() {}
	}
	f, err := os.Create(p)
	if err != nil {
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}
