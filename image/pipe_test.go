package image

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
)

func TestReadAheadSameBytesAndErrors(t *testing.T) {
	data := make([]byte, 3*aheadChunkSize+12345)
	rand.NewChaCha8([32]byte{1}).Read(data)
	// Small, odd reads from the source and from the reader.
	a := readAhead(iotest.HalfReader(bytes.NewReader(data)))
	var got bytes.Buffer
	buf := make([]byte, 7777)
	for {
		n, err := a.Read(buf)
		got.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatal("bytes differ")
	}
	if !a.finished() {
		t.Error("goroutine still running after EOF")
	}
	a.wait()

	// An error arrives after the bytes before it, and sticks.
	boom := errors.New("boom")
	a = readAhead(io.MultiReader(bytes.NewReader(data[:100]), iotest.ErrReader(boom)))
	b, err := io.ReadAll(a)
	if !errors.Is(err, boom) || !bytes.Equal(b, data[:100]) {
		t.Fatalf("got %d bytes, err %v", len(b), err)
	}
	if _, err := a.Read(buf); !errors.Is(err, boom) {
		t.Errorf("second read: %v", err)
	}

	// WriteTo (io.Copy) gives the same bytes.
	got.Reset()
	if _, err := io.Copy(&got, readAhead(bytes.NewReader(data))); err != nil || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("WriteTo: %v", err)
	}
}

func TestReadAheadStopMidStream(t *testing.T) {
	// An endless source: wait must stop the goroutine, and reads after it
	// must not hang.
	a := readAhead(zeros{})
	if _, err := io.ReadFull(a, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	a.wait()
	if !a.finished() {
		t.Fatal("goroutine still running after wait")
	}
	if _, err := io.Copy(io.Discard, a); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("after wait: %v", err)
	}
	// Chained stages stopped in either order.
	s1 := readAhead(zeros{})
	s2 := readAhead(s1)
	io.ReadFull(s2, make([]byte, 3*aheadChunkSize))
	s1.wait()
	s2.wait()
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }
