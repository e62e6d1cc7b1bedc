package app

import (
	"math"
	"testing"
)

// TestGCPace: the heap may double until largeHeap is live, then grow by
// largeHeap, down to a fifth of what is live; the memory limit stays a
// fixed slack above that growth, and is off below largeHeap.
func TestGCPace(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		live    uint64
		percent int
		limit   int64
	}{
		{0, 100, math.MaxInt64},
		{32 * mib, 100, math.MaxInt64},
		{64 * mib, 50, (64 + 32 + 16) * mib},
		{128 * mib, 25, (128 + 32 + 16) * mib},
		{160 * mib, 20, (160 + 32 + 16) * mib},
		{1000 * mib, 20, (1000 + 200 + 16) * mib},
	}
	for _, tc := range tests {
		if got := gcPercent(tc.live); got != tc.percent {
			t.Errorf("gcPercent(%d MiB) = %d, want %d", tc.live/mib, got, tc.percent)
		}
		if got := memoryLimit(tc.live); got != tc.limit {
			t.Errorf("memoryLimit(%d MiB) = %d MiB, want %d MiB", tc.live/mib, got/mib, tc.limit/mib)
		}
	}
}
