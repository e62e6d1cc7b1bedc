package ext4

import (
	"bytes"
	"cmp"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/docker2vm/docker2vm/fstree"
)

// A Writer between two Puts is its image file (the data written so far),
// the contents it issued (in the caller's tree) and where its next blocks
// come from. Checkpoint records the last, EncodeContent the contents; a
// Writer made by Resume over a copy of the file, given the checkpoint and
// the decoded contents, goes on exactly as the original would have: same
// blocks for the same Puts, the same image from Finish.

const checkpointMagic = "d2v-ext4-writer-1\n"

// ErrCheckpoint is matched (errors.Is) by a checkpoint or content record
// that does not fit the Writer given it: damaged, from another version, or
// from a Writer with other options.
var ErrCheckpoint = errors.New("not a checkpoint of this writer")

// Checkpoint writes out what the Writer holds back and returns its state.
func (w *Writer) Checkpoint() ([]byte, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.finished {
		return nil, errors.New("ext4: Checkpoint after Finish")
	}
	if err := w.flush(); err != nil {
		return nil, err
	}
	free := slices.Clone(w.alloc.free)
	slices.SortFunc(free, func(a, b run) int { return cmp.Compare(a.start, b.start) })
	b := []byte(checkpointMagic)
	b = binary.AppendUvarint(b, w.alloc.next)
	b = binary.AppendUvarint(b, w.alloc.resv)
	b = binary.AppendUvarint(b, w.alloc.limit)
	b = binary.AppendUvarint(b, uint64(len(free)))
	for _, r := range free {
		b = binary.AppendUvarint(b, r.start)
		b = binary.AppendUvarint(b, r.len)
	}
	return b, nil
}

// Resume returns a Writer that goes on with the image in f, which holds
// what an earlier Writer with the same options wrote: its state comes from
// Restore. f is not truncated.
func Resume(f *os.File, opts Options) (*Writer, error) { return newWriter(f, opts) }

// Restore sets the Writer's state to cp, a Checkpoint of a Writer with the
// same options. The Writer must not have written past it.
func (w *Writer) Restore(cp []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := bytes.NewReader(cp)
	magic := make([]byte, len(checkpointMagic))
	if _, err := r.Read(magic); err != nil || string(magic) != checkpointMagic {
		return fmt.Errorf("%w: no header", ErrCheckpoint)
	}
	var a allocator
	var n uint64
	var err error
	for _, p := range []*uint64{&a.next, &a.resv, &a.limit, &n} {
		if *p, err = binary.ReadUvarint(r); err != nil {
			return fmt.Errorf("%w: %v", ErrCheckpoint, err)
		}
	}
	if a.resv != w.alloc.resv || a.limit != w.alloc.limit {
		return fmt.Errorf("%w: the image's size options differ", ErrCheckpoint)
	}
	bound := a.limit // --size's, else the automatic size's bound
	if bound == 0 {
		bound = maxAutoBytes / blockSize
	}
	if a.next < w.alloc.next || a.next > bound {
		return fmt.Errorf("%w: block %d is out of range", ErrCheckpoint, a.next)
	}
	if n > a.next {
		return fmt.Errorf("%w: %d free runs", ErrCheckpoint, n)
	}
	a.free = make(runHeap, n)
	end := uint64(0)
	for i := range a.free {
		var rn run
		if rn.start, err = binary.ReadUvarint(r); err == nil {
			rn.len, err = binary.ReadUvarint(r)
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrCheckpoint, err)
		}
		if rn.start < end || rn.len == 0 || rn.len > a.next || rn.start > a.next-rn.len {
			return fmt.Errorf("%w: free run %d+%d is out of range", ErrCheckpoint, rn.start, rn.len)
		}
		end = rn.start + rn.len
		a.free[i] = rn
	}
	if r.Len() != 0 {
		return fmt.Errorf("%w: data after the state", ErrCheckpoint)
	}
	heap.Init(&a.free)
	w.alloc = a
	return nil
}

// EncodeContent records c, a content this Writer issued and did not
// release, for DecodeContent.
func (w *Writer) EncodeContent(fc fstree.Content) ([]byte, error) {
	c, ok := fc.(*content)
	if !ok || c.w != w || c.released {
		return nil, errors.New("ext4: EncodeContent of content this writer does not hold")
	}
	b := binary.AppendUvarint(nil, uint64(c.size))
	b = binary.AppendUvarint(b, uint64(c.crc))
	ext := c.extents()
	b = binary.AppendUvarint(b, uint64(len(ext)))
	for _, e := range ext {
		b = binary.AppendUvarint(b, uint64(e.logical))
		b = binary.AppendUvarint(b, uint64(e.len))
		b = binary.AppendUvarint(b, e.phys)
	}
	return b, nil
}

// DecodeContent returns the content EncodeContent recorded, issued by this
// Writer, whose state (Restore) must be the one the record was made in:
// its extents must lie in blocks the Writer has handed out.
func (w *Writer) DecodeContent(b []byte) (fstree.Content, error) {
	r := bytes.NewReader(b)
	var size, crc, n uint64
	var err error
	for _, p := range []*uint64{&size, &crc, &n} {
		if *p, err = binary.ReadUvarint(r); err != nil {
			return nil, fmt.Errorf("%w: content: %v", ErrCheckpoint, err)
		}
	}
	blocks := (size + blockSize - 1) / blockSize
	if size > maxFileBlks*blockSize || crc > 1<<32-1 || n > blocks {
		return nil, fmt.Errorf("%w: content of %d bytes in %d extents", ErrCheckpoint, size, n)
	}
	c := &content{w: w, size: int64(size), crc: uint32(crc)}
	next := uint64(0) // the first logical block the next extent may map
	for range n {
		var logical, length, phys uint64
		for _, p := range []*uint64{&logical, &length, &phys} {
			if *p, err = binary.ReadUvarint(r); err != nil {
				return nil, fmt.Errorf("%w: content: %v", ErrCheckpoint, err)
			}
		}
		if logical < next || length == 0 || length > maxExtentLen || logical+length > blocks || phys+length > w.alloc.next || phys+length < phys {
			return nil, fmt.Errorf("%w: extent %d+%d at block %d is out of range", ErrCheckpoint, logical, length, phys)
		}
		next = logical + length
		c.add(extent{logical: uint32(logical), len: uint32(length), phys: phys})
	}
	if r.Len() != 0 {
		return nil, fmt.Errorf("%w: data after the content", ErrCheckpoint)
	}
	return c, nil
}
