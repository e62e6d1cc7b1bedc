package app

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

// paceGC bounds how far the heap grows between two collections once what
// is live is large. Go's default (GOGC=100) lets the heap double the live
// data before it collects; a conversion's live heap is the metadata tree
// (a few hundred bytes per entry), so an image of a million entries would
// need twice that in memory. Past largeHeap of live data the heap may grow
// by largeHeap, down to a fifth of what is live (GOGC=20). Images of up
// to a few hundred thousand entries never get there and run as before.
// A GOGC set in the environment wins. It returns what restores the setting.
func paceGC() (stop func()) {
	if os.Getenv("GOGC") != "" {
		return func() {}
	}
	prev := debug.SetGCPercent(100)
	var stopped atomic.Bool
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	var arm func()
	arm = func() {
		// A cleanup runs after the collection that found its object
		// unreachable: once per cycle, re-armed each time.
		runtime.AddCleanup(new([64]byte), func(struct{}) {
			if stopped.Load() {
				return
			}
			metrics.Read(sample)
			if sample[0].Value.Kind() == metrics.KindUint64 {
				debug.SetGCPercent(gcPercent(sample[0].Value.Uint64()))
			}
			arm()
		}, struct{}{})
	}
	arm()
	return func() {
		stopped.Store(true)
		debug.SetGCPercent(prev)
	}
}

// largeHeap is the live heap past which paceGC slows the heap's growth.
const largeHeap = 32 << 20

// gcPercent is the GOGC for a live heap of live bytes.
func gcPercent(live uint64) int {
	if live <= largeHeap {
		return 100
	}
	return max(20, int(largeHeap*100/live))
}
