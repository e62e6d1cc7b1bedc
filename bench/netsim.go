package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// link is a simulated network between the benchmark's clients and the
// local registry: every request waits one round trip before it is
// forwarded (a new connection one more, for its handshake), and response
// bodies flow at most at connRate bytes/s each and linkRate bytes/s all
// together (a shared link). Zero rates do not limit.
type link struct {
	rtt      time.Duration
	connRate float64
	linkRate float64
}

// throttle paces a byte stream: a token bucket with no burst beyond one
// chunk, so that the rate holds over any interval longer than a chunk.
type throttle struct {
	mu   sync.Mutex
	rate float64 // bytes/s; 0: unlimited
	next time.Time
}

// take returns when n more bytes may pass.
func (t *throttle) take(ctx context.Context, n int) error {
	if t == nil || t.rate <= 0 {
		return nil
	}
	t.mu.Lock()
	now := time.Now()
	if t.next.Before(now) {
		t.next = now
	}
	at := t.next
	t.next = t.next.Add(time.Duration(float64(n) / t.rate * float64(time.Second)))
	t.mu.Unlock()
	if d := time.Until(at); d > 0 {
		tm := time.NewTimer(d)
		defer tm.Stop()
		select {
		case <-tm.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// throttledBody paces a response body through its own and the shared throttle.
type throttledBody struct {
	rc     io.ReadCloser
	ctx    context.Context
	own    *throttle
	shared *throttle
}

const throttleChunk = 16 << 10

func (b *throttledBody) Read(p []byte) (int, error) {
	if len(p) > throttleChunk {
		p = p[:throttleChunk]
	}
	n, err := b.rc.Read(p)
	if n > 0 {
		if err := b.own.take(b.ctx, n); err != nil {
			return 0, err
		}
		if err := b.shared.take(b.ctx, n); err != nil {
			return 0, err
		}
	}
	return n, err
}

func (b *throttledBody) Close() error { return b.rc.Close() }

// startLink serves a proxy to upstream (http://host:port) across l on a
// loopback port and returns its host:port and what stops it.
func startLink(upstream string, l link) (string, func(), error) {
	u, err := url.Parse(upstream)
	if err != nil {
		return "", nil, err
	}
	shared := &throttle{rate: l.linkRate}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1
	rp.ModifyResponse = func(resp *http.Response) error {
		resp.Body = &throttledBody{rc: resp.Body, ctx: resp.Request.Context(), own: &throttle{rate: l.connRate}, shared: shared}
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	type connKey struct{}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			wait := l.rtt
			if used := r.Context().Value(connKey{}).(*atomic.Bool); !used.Swap(true) {
				wait += l.rtt // a new connection: its handshake first
			}
			select {
			case <-time.After(wait):
			case <-r.Context().Done():
				return
			}
			rp.ServeHTTP(w, r)
		}),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, new(atomic.Bool))
		},
	}
	go srv.Serve(ln)
	return ln.Addr().String(), func() { srv.Close() }, nil
}
