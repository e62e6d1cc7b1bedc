package blob

import (
	"io"

	"github.com/docker2vm/docker2vm/internal/console"
)

// Progress reports blob downloads and what happens to the blobs, through
// the run's console (see console.Console): bars on a terminal, lines
// elsewhere. A nil Progress reports nothing.
type Progress = console.Console

// NewProgress reports on w: the console w is, or a new one (with bars
// when w is a terminal, unless plain).
func NewProgress(w io.Writer, plain bool) *Progress {
	return console.Of(w, plain)
}

// Watch reports the download of a blob read through rc; on a terminal its
// bar goes among the others by order (a layer's index).
func Watch(p *Progress, rc io.ReadCloser, what string, size int64, order int) io.ReadCloser {
	if p == nil {
		return rc
	}
	return &progressReader{rc: rc, d: p.Start(what, size, order)}
}

// progressReader reports the download of a blob read through one reader.
type progressReader struct {
	rc io.ReadCloser
	d  *console.Download
}

func (r *progressReader) Read(b []byte) (int, error) {
	n, err := r.rc.Read(b)
	r.d.Add(n)
	if err == io.EOF {
		r.d.Finish()
	}
	return n, err
}

func (r *progressReader) Close() error {
	r.d.Abandon()
	return r.rc.Close()
}
