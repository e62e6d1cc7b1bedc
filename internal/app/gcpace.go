package app

import (
	"math"
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
// by largeHeap, down to a fifth of what is live (GOGC=20), and a soft
// memory limit a little above that growth makes the runtime hand the pages
// a collection freed back to the system: without it they stay with the
// process (about a third more resident memory at the end of a million
// entries). Images of up to a few hundred thousand entries never get there
// and run as before. A GOGC or GOMEMLIMIT set in the environment wins. It
// returns what restores the settings.
func paceGC() (stop func()) {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return func() {}
	}
	prev := debug.SetGCPercent(100)
	prevLimit := debug.SetMemoryLimit(-1)
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
				live := sample[0].Value.Uint64()
				debug.SetGCPercent(gcPercent(live))
				debug.SetMemoryLimit(memoryLimit(live))
			}
			arm()
		}, struct{}{})
	}
	arm()
	return func() {
		stopped.Store(true)
		debug.SetGCPercent(prev)
		debug.SetMemoryLimit(prevLimit)
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

// limitSlack is what the memory limit leaves above the heap's goal: the
// memory the runtime holds outside the heap (stacks, its own metadata) and
// some room, so that the limit does not make collections come sooner than
// gcPercent does.
const limitSlack = 16 << 20

// memoryLimit is the soft memory limit for a live heap of live bytes: the
// heap's goal (live grown by gcPercent) and limitSlack; none below
// largeHeap.
func memoryLimit(live uint64) int64 {
	if live <= largeHeap {
		return math.MaxInt64
	}
	return int64(live + live*uint64(gcPercent(live))/100 + limitSlack)
}
