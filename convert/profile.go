package convert

import (
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
	var stops []func()
	if p := os.Getenv("DOCKER2VM_CPUPROFILE"); p != "" {
		if f, err := os.Create(p); err == nil {
			if err := pprof.StartCPUProfile(f); err == nil {
				stops = append(stops, func() { pprof.StopCPUProfile(); f.Close() })
			} else {
				f.Close()
			}
		}
	}
	if p := os.Getenv("DOCKER2VM_TRACE"); p != "" {
		if f, err := os.Create(p); err == nil {
			if err := trace.Start(f); err == nil {
				stops = append(stops, func() { trace.Stop(); f.Close() })
			} else {
				f.Close()
			}
		}
	}
	return func() {
		for _, stop := range stops {
			stop()
		}
	}
}
