package sparse

import (
	"bytes"
	"fmt"
	"os"
)

// Writer writes a stream into a new file, leaving every all-zero Block
// (aligned in the file) as a hole: whatever the source's layout and
// however the stream is cut into writes, the copy is as sparse as its
// content allows. Close writes what is left and gives the file its size
// (a stream that ends in zeros ends in a hole).
type Writer struct {
	f    *os.File
	off  int64  // where tail starts: everything before it is written
	tail []byte // the start of a block not complete yet
}

// NewWriter writes into f from offset 0; f should be empty.
func NewWriter(f *os.File) *Writer { return &Writer{f: f, tail: make([]byte, 0, Block)} }

// Write writes p's complete non-zero blocks, coalesced into one write per
// run, and keeps a last incomplete block for the next Write or Close.
func (w *Writer) Write(p []byte) (int, error) {
	total := len(p)
	if len(w.tail) > 0 {
		k := min(len(p), Block-len(w.tail))
		w.tail = append(w.tail, p[:k]...)
		p = p[k:]
		if len(w.tail) < Block {
			return total, nil
		}
		if err := w.blocks(w.tail); err != nil {
			return 0, err
		}
		w.tail = w.tail[:0]
	}
	whole := len(p) / Block * Block
	if err := w.blocks(p[:whole]); err != nil {
		return 0, err
	}
	w.tail = append(w.tail, p[whole:]...)
	return total, nil
}

// blocks writes b, whole blocks, at w.off: each run of non-zero blocks
// with one write.
func (w *Writer) blocks(b []byte) error {
	run := 0 // b[run:i] is data not written yet
	flush := func(i int) error {
		if i > run {
			if _, err := w.f.WriteAt(b[run:i], w.off+int64(run)); err != nil {
				return fmt.Errorf("writing %s: %w", w.f.Name(), err)
			}
		}
		return nil
	}
	for i := 0; i < len(b); i += Block {
		if bytes.Equal(b[i:i+Block], zeroBlock[:]) {
			if err := flush(i); err != nil {
				return err
			}
			run = i + Block
		}
	}
	if err := flush(len(b)); err != nil {
		return err
	}
	w.off += int64(len(b))
	return nil
}

// Close writes the last incomplete block and sets the file's size; it
// does not close the file.
func (w *Writer) Close() error {
	if len(w.tail) > 0 && !bytes.Equal(w.tail, zeroBlock[:len(w.tail)]) {
		if _, err := w.f.WriteAt(w.tail, w.off); err != nil {
			return fmt.Errorf("writing %s: %w", w.f.Name(), err)
		}
	}
	w.off += int64(len(w.tail))
	w.tail = w.tail[:0]
	if err := w.f.Truncate(w.off); err != nil {
		return fmt.Errorf("sizing %s: %w", w.f.Name(), err)
	}
	return nil
}
