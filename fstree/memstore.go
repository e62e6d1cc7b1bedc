package fstree

import (
	"bytes"
	"context"
	"fmt"
	"io"
)

// MemStore keeps file content in memory. It is meant for tests and small
// trees; it also counts live bytes so tests can check that released content
// is really released.
type MemStore struct {
	live int64
}

type memContent struct {
	data     []byte
	released bool
}

func (c *memContent) Size() int64 { return int64(len(c.data)) }

// Put implements Store.
func (s *MemStore) Put(ctx context.Context, r io.Reader, size int64) (Content, error) {
	var buf bytes.Buffer
	n, err := io.CopyN(&buf, r, size)
	if err != nil {
		return nil, fmt.Errorf("reading %d bytes of file data (got %d): %w", size, n, err)
	}
	s.live += size
	return &memContent{data: buf.Bytes()}, nil
}

// Release implements Store.
func (s *MemStore) Release(c Content) {
	mc, ok := c.(*memContent)
	if !ok || mc.released {
		return
	}
	mc.released = true
	s.live -= int64(len(mc.data))
}

// Open implements Opener.
func (s *MemStore) Open(c Content) (io.ReaderAt, error) {
	mc, ok := c.(*memContent)
	if !ok {
		return nil, fmt.Errorf("content %T was not stored in this MemStore", c)
	}
	if mc.released {
		return nil, fmt.Errorf("content was released")
	}
	return bytes.NewReader(mc.data), nil
}

// Live is the number of bytes held by unreleased content.
func (s *MemStore) Live() int64 { return s.live }

// Bytes returns the stored bytes of c (nil if c is not from a MemStore).
func Bytes(c Content) []byte {
	if mc, ok := c.(*memContent); ok {
		return mc.data
	}
	return nil
}
