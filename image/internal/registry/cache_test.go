package registry

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/iotest"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/docker2vm/docker2vm/image/internal/blob"
)

func TestCacheBehaviour(t *testing.T) {
	ctx := context.Background()
	c, err := newBlobCache(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("layer-bytes "), 10000)
	desc := v1.Descriptor{Digest: blob.Sha256Of(data), Size: int64(len(data))}

	t.Run("miss", func(t *testing.T) {
		if _, ok, err := c.get(ctx, desc); ok || err != nil {
			t.Fatalf("get on empty cache = %v, %v", ok, err)
		}
	})
	t.Run("tee commits only a complete verified stream", func(t *testing.T) {
		rc := c.tee(io.NopCloser(bytes.NewReader(data[:100])), desc) // truncated source
		io.ReadAll(iotest.OneByteReader(rc))
		rc.Close()
		if _, ok, _ := c.get(ctx, desc); ok {
			t.Fatal("a truncated stream was committed")
		}
		rc = c.tee(io.NopCloser(bytes.NewReader(data)), desc)
		buf := make([]byte, 10)
		rc.Read(buf)
		rc.Close() // closed before EOF
		if _, ok, _ := c.get(ctx, desc); ok {
			t.Fatal("a stream closed early was committed")
		}
		assertNoTemps(t, c.dir)
		rc = c.tee(io.NopCloser(bytes.NewReader(data)), desc)
		got, err := io.ReadAll(iotest.OneByteReader(rc))
		rc.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("tee changed the data: %v", err)
		}
		f, ok, err := c.get(ctx, desc)
		if !ok || err != nil {
			t.Fatalf("complete stream not committed: %v %v", ok, err)
		}
		f.Close()
		assertNoTemps(t, c.dir)
	})
	t.Run("corrupt entry removed", func(t *testing.T) {
		p := c.path(desc.Digest)
		b, _ := os.ReadFile(p)
		b[5] ^= 0xff
		os.WriteFile(p, b, 0o644)
		if _, ok, err := c.get(ctx, desc); ok || err != nil {
			t.Fatalf("corrupt entry served: %v %v", ok, err)
		}
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("corrupt entry not removed: %v", err)
		}
		// Same size check: a truncated entry is a miss too.
		os.WriteFile(p, data[:10], 0o644)
		if _, ok, _ := c.get(ctx, desc); ok {
			t.Fatal("truncated entry served")
		}
	})
	t.Run("put and getBytes", func(t *testing.T) {
		small := []byte(`{"schemaVersion":2}`)
		if err := c.put(small); err != nil {
			t.Fatal(err)
		}
		b, ok, err := c.getBytes(ctx, v1.Descriptor{Digest: blob.Sha256Of(small)}, 1<<20)
		if !ok || err != nil || !bytes.Equal(b, small) {
			t.Fatalf("getBytes = %q %v %v", b, ok, err)
		}
	})
	t.Run("concurrent writers and readers", func(t *testing.T) {
		os.Remove(c.path(desc.Digest))
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for g := 0; g < 2; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 20; i++ {
					if f, ok, err := c.get(ctx, desc); err != nil {
						errs <- err
						return
					} else if ok {
						got, _ := io.ReadAll(f)
						f.Close()
						if !bytes.Equal(got, data) {
							errs <- errors.New("reader saw a partial or wrong entry")
							return
						}
						os.Remove(c.path(desc.Digest)) // force more writes
						continue
					}
					rc := c.tee(io.NopCloser(bytes.NewReader(data)), desc)
					got, err := io.ReadAll(rc)
					rc.Close()
					if err != nil || !bytes.Equal(got, data) {
						errs <- errors.New("tee stream wrong")
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		assertNoTemps(t, c.dir)
	})
}

func assertNoTemps(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}
