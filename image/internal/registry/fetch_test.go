package registry

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/docker2vm/docker2vm/image/internal/blob"
	"github.com/docker2vm/docker2vm/internal/testtar"
)

func TestParseParallelDownloads(t *testing.T) {
	for _, s := range []string{"1", "4", " 32 "} {
		if _, err := ParseParallelDownloads(s); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
	for _, s := range []string{"", "0", "-1", "33", "four"} {
		if _, err := ParseParallelDownloads(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
	t.Setenv(ParallelDownloadsEnv, "7")
	if n, err := parallelDownloads(Config{}); n != 7 || err != nil {
		t.Errorf("from the environment: %d %v", n, err)
	}
	if n, err := parallelDownloads(Config{ParallelDownloads: 2}); n != 2 || err != nil {
		t.Errorf("the option wins: %d %v", n, err)
	}
	t.Setenv(ParallelDownloadsEnv, "lots")
	if _, err := parallelDownloads(Config{}); err == nil || !strings.Contains(err.Error(), ParallelDownloadsEnv) {
		t.Errorf("a bad environment value: %v", err)
	}
}

func TestSegmentBounds(t *testing.T) {
	const M = 1 << 20
	tests := []struct {
		size int64
		n    int
		want []int64
	}{
		{0, 4, []int64{0}},  // unknown size: one request to the end
		{-1, 4, []int64{0}}, // the same
		{100 * M, 1, []int64{100 * M}},
		{7 * M, 4, []int64{7 * M}}, // smaller than two minimal segments
		{8 * M, 4, []int64{4 * M, 8 * M}},
		{23 * M, 4, []int64{23 * M / 4, 23 * M / 2, 3 * 23 * M / 4, 23 * M}}, // size/n
		{24 * M, 4, []int64{6 * M, 12 * M, 18 * M, 24 * M}},
		{100 * M, 4, []int64{100 * M / 7, 2 * 100 * M / 7, 3 * 100 * M / 7, 4 * 100 * M / 7, 5 * 100 * M / 7, 6 * 100 * M / 7, 100 * M}}, // at most maxSegment, evened out
		{10*M + 1, 2, []int64{5*M + 1, 10*M + 1}},                                                                                        // evened out, the last takes the rest
		{64 * M, 32, []int64{4 * M, 8 * M, 12 * M, 16 * M, 20 * M, 24 * M, 28 * M, 32 * M, 36 * M, 40 * M, 44 * M, 48 * M, 52 * M, 56 * M, 60 * M, 64 * M}},
	}
	for _, tc := range tests {
		got := SegmentBounds(tc.size, tc.n, minSegment, maxSegment)
		if len(got) != len(tc.want) {
			t.Errorf("SegmentBounds(%d, %d) = %v, want %v", tc.size, tc.n, got, tc.want)
			continue
		}
		for i := range got {
			// Evening out rounds up: allow a byte per segment.
			if d := got[i] - tc.want[i]; d < 0 || d > int64(i+1) {
				t.Errorf("SegmentBounds(%d, %d) = %v, want %v", tc.size, tc.n, got, tc.want)
				break
			}
		}
		if tc.size > 0 && got[len(got)-1] != tc.size {
			t.Errorf("SegmentBounds(%d, %d) ends at %d", tc.size, tc.n, got[len(got)-1])
		}
		for i := 1; i < len(got); i++ {
			if s := got[i] - got[i-1]; s > maxSegment || (len(got) > 1 && s < minSegment-1) {
				t.Errorf("SegmentBounds(%d, %d): segment %d is %d bytes", tc.size, tc.n, i, s)
			}
		}
	}
}

// TestSegmentScheduling drives the fetcher with segments fetched by the
// test, one at a time: segments start in layer order; one of the layer
// being read that is a window or more ahead of its reader waits, and a
// later layer's segment takes its connection; once the reader needs it,
// it starts at once, however many run.
func TestSegmentScheduling(t *testing.T) {
	const seg = 64 << 10
	blobA, blobB := testtar.Incompressible(1, 10*seg), testtar.Incompressible(2, 4*seg)
	layers := []v1.Descriptor{
		{Digest: blob.Sha256Of(blobA), Size: int64(len(blobA))},
		{Digest: blob.Sha256Of(blobB), Size: int64(len(blobB))},
	}
	blobs := [][]byte{blobA, blobB}
	s := &Store{parallel: 3, segment: seg, client: &regClient{}}
	s.client.noteRanges(true) // the segments here are fetched by the test
	f := newFetcher(context.Background(), s, layers, []string{"layer 1/2", "layer 2/2"})
	f.ahead = 2 * seg
	started := make(chan string, 32)
	release := map[string]chan struct{}{}
	var mu sync.Mutex
	gate := func(id string) chan struct{} {
		mu.Lock()
		defer mu.Unlock()
		if release[id] == nil {
			release[id] = make(chan struct{})
		}
		return release[id]
	}
	id := func(sg *segment) string { return fmt.Sprintf("%c%d", 'A'+sg.d.index, sg.start/seg) }
	f.fetch = func(sg *segment) error {
		started <- id(sg)
		select {
		case <-gate(id(sg)):
		case <-sg.d.ctx.Done():
			return sg.d.ctx.Err()
		}
		p := blobs[sg.d.index][sg.start:sg.end]
		if _, err := sg.d.file.WriteAt(p, sg.start); err != nil {
			return err
		}
		sg.d.wrote(sg, p, sg.start)
		return nil
	}
	defer f.close()
	expect := func(want ...string) {
		t.Helper()
		var got []string
		for range want {
			select {
			case s := <-started:
				got = append(got, s)
			case <-time.After(10 * time.Second):
				t.Fatalf("started %q, want %q", got, want)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("started %q, want %q", got, want)
		}
		select {
		case s := <-started:
			t.Fatalf("%s started too", s)
		case <-time.After(50 * time.Millisecond):
		}
	}
	done := func(id string) { close(gate(id)) }

	rc, err := f.open(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	// A2 is two segments ahead of a reader at 0: B0 takes its place.
	expect("A0", "A1", "B0")
	done("A0")
	expect("B1")
	done("A1")
	expect("B2")
	// The reader reads A0 and A1, then needs A2: it starts, a fourth.
	buf := make([]byte, 2*seg)
	if _, err := io.ReadFull(rc, buf); err != nil || !bytes.Equal(buf, blobA[:2*seg]) {
		t.Fatalf("the first two segments: %v", err)
	}
	expect("A2")
	// Four run; one ending leaves three: nothing starts.
	done("B0")
	expect()
	// The window is now as wide as what was read: A3 starts before B3.
	done("B1")
	expect("A3")
	for _, s := range []string{"A2", "A3", "B2"} {
		done(s)
	}
	expect("B3") // A4 is two segments ahead of a reader at 2
	if _, err := io.ReadFull(rc, buf); err != nil {
		t.Fatal(err)
	}
	expect("A4", "A5") // the reader moved on: they may start
	got := slices.Clone(buf)
	go func() {
		for _, s := range []string{"A4", "A5", "B3", "A6", "A7", "A8", "A9"} {
			done(s)
		}
	}()
	rest, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if got = append(append(slices.Clone(blobA[:2*seg]), got...), rest...); !bytes.Equal(got, blobA) {
		t.Fatalf("layer 1: %d bytes, not its blob", len(got))
	}
	rc, err = f.open(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(b, blobB) {
		t.Fatalf("layer 2: %d bytes, %v", len(b), err)
	}
}
