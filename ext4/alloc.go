package ext4

import "container/heap"

// run is a physically contiguous range of blocks.
type run struct {
	start, len uint64
}

// allocator hands out blocks. Fresh blocks come from a bump pointer that
// steps over the superblock and group descriptor copies at the start of the
// sparse_super backup groups; released runs are reused lowest address first
// so that allocation depends only on the order of calls (deterministic).
type allocator struct {
	next  uint64  // first never-allocated block
	resv  uint64  // blocks kept at the start of each backup group: superblock + GDT
	limit uint64  // 0, or the filesystem size in blocks when fixed
	free  runHeap // released runs
}

// isBackupGroup reports whether group g holds a superblock copy under
// sparse_super: groups 0, 1 and powers of 3, 5 and 7.
func isBackupGroup(g uint64) bool {
	if g <= 1 {
		return true
	}
	for _, p := range []uint64{3, 5, 7} {
		n := p
		for n < g {
			n *= p
		}
		if n == g {
			return true
		}
	}
	return false
}

// skipReserved moves next past a backup group's reserved area.
func (a *allocator) skipReserved() {
	g := a.next / blocksPerGrp
	if isBackupGroup(g) && a.next-g*blocksPerGrp < a.resv {
		a.next = g*blocksPerGrp + a.resv
	}
}

// fresh returns up to n never-used blocks, never crossing a group boundary.
func (a *allocator) fresh(n uint64) run {
	a.skipReserved()
	end := (a.next/blocksPerGrp + 1) * blocksPerGrp
	if n > end-a.next {
		n = end - a.next
	}
	r := run{a.next, n}
	a.next += n
	return r
}

// contig returns exactly n contiguous never-used blocks (n < group size),
// skipping to the next group if the current one has too little room left.
func (a *allocator) contig(n uint64) run {
	a.skipReserved()
	end := (a.next/blocksPerGrp + 1) * blocksPerGrp
	if end-a.next < n {
		a.next = end
		a.skipReserved()
	}
	r := run{a.next, n}
	a.next += n
	return r
}

// alloc returns up to n blocks, from released runs first.
func (a *allocator) alloc(n uint64) run {
	if a.free.Len() > 0 {
		r := heap.Pop(&a.free).(run)
		if r.len > n {
			heap.Push(&a.free, run{r.start + n, r.len - n})
			r.len = n
		}
		return r
	}
	return a.fresh(n)
}

func (a *allocator) release(r run) {
	if r.len > 0 {
		heap.Push(&a.free, r)
	}
}

type runHeap []run

func (h runHeap) Len() int           { return len(h) }
func (h runHeap) Less(i, j int) bool { return h[i].start < h[j].start }
func (h runHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *runHeap) Push(x any)        { *h = append(*h, x.(run)) }
func (h *runHeap) Pop() any {
	old := *h
	r := old[len(old)-1]
	*h = old[:len(old)-1]
	return r
}

// gdtBlocks is the number of blocks the group descriptor table of n groups
// takes.
func gdtBlocks(groups uint64) uint64 {
	return (groups*descSize + blockSize - 1) / blockSize
}
