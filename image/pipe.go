package image

import (
	"io"
	"sync"
)

// Pipelining. A layer stream is a chain of stages: read the stored blob and
// hash it, decompress, hash the decompressed bytes (diff ID), and then the
// consumer (tar parsing, merging, writing the image). Each stage alone keeps
// one core busy; run in one goroutine they add up. readAhead runs the stages
// below it in a goroutine that fills large buffers ahead of the reader, so
// on a machine with two or more cores decompression overlaps everything
// after it. Order, bytes and errors are exactly what reading r directly
// would give; the only difference is that up to aheadChunks*aheadChunkSize
// bytes are read before the caller asks for them.
const (
	aheadChunkSize = 1 << 20
	aheadChunks    = 4
)

type chunk struct {
	buf []byte // a slice of one of the pool's buffers
	err error  // returned after buf is consumed; final
}

// aheadReader is the reading end of readAhead.
type aheadReader struct {
	full chan chunk
	free chan []byte
	stop chan struct{}
	done chan struct{} // closed when the goroutine no longer touches r

	cur     []byte // unread part of the current chunk
	curBuf  []byte // the buffer cur belongs to, returned to free when drained
	err     error  // sticky, once reached
	stopped sync.Once
}

// readAhead starts a goroutine reading r into a ring of buffers. Call stop
// before touching r (or what it reads from) again, or closing it.
func readAhead(r io.Reader) *aheadReader {
	a := &aheadReader{
		full: make(chan chunk, aheadChunks),
		free: make(chan []byte, aheadChunks+1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	for range aheadChunks + 1 {
		a.free <- make([]byte, aheadChunkSize)
	}
	go a.fill(r)
	return a
}

func (a *aheadReader) fill(r io.Reader) {
	defer close(a.done)
	for {
		var buf []byte
		select {
		case buf = <-a.free:
		case <-a.stop:
			return
		}
		// Fill the whole buffer (fewer, larger hand-offs), but hand over
		// what there is as soon as the source stops or fails.
		n, err := io.ReadFull(r, buf)
		if err == io.ErrUnexpectedEOF {
			err = io.EOF
		}
		c := chunk{buf: buf[:n], err: err}
		select {
		case a.full <- c:
		case <-a.stop:
			return
		}
		if err != nil {
			return
		}
	}
}

func (a *aheadReader) Read(p []byte) (int, error) {
	for len(a.cur) == 0 {
		if a.err != nil {
			return 0, a.err
		}
		if a.curBuf != nil {
			a.free <- a.curBuf[:cap(a.curBuf)]
			a.curBuf = nil
		}
		var c chunk
		select {
		case c = <-a.full:
		case <-a.done:
			select {
			case c = <-a.full:
			default:
				return 0, io.ErrClosedPipe
			}
		}
		a.cur, a.curBuf, a.err = c.buf, c.buf, c.err
		if len(p) == 0 {
			return 0, nil
		}
	}
	n := copy(p, a.cur)
	a.cur = a.cur[n:]
	return n, nil
}

// WriteTo hands whole chunks to w (io.Copy uses it): no extra copy.
func (a *aheadReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if len(a.cur) > 0 {
			n, err := w.Write(a.cur)
			total += int64(n)
			a.cur = a.cur[n:]
			if err != nil {
				return total, err
			}
		}
		var p [0]byte
		if _, err := a.Read(p[:]); err != nil {
			if err == io.EOF {
				return total, nil
			}
			return total, err
		}
	}
}

// wait stops the goroutine and waits until it no longer reads from its
// source. Reads after wait return what was already buffered, then
// io.ErrClosedPipe unless the source's end had been reached.
func (a *aheadReader) wait() {
	a.stopped.Do(func() { close(a.stop) })
	<-a.done
}

// finished reports whether the goroutine has stopped by itself (its source
// returned an error or EOF): then the source may be touched again.
func (a *aheadReader) finished() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}
