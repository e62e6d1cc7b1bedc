// Package faultproxy is an HTTP reverse proxy for tests that injects
// network faults between a client and a real server (a registry): it drops
// connections after some bytes of a response body, stalls, answers errors
// instead of forwarding, corrupts bytes, or ignores Range requests. Rules
// pick requests by method, path pattern and attempt number (the how-many-th
// request for that method and path this is), and every request is logged
// with the bytes of body it was sent, so a test can check what the client
// asked for and how much it transferred.
package faultproxy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Action is what a rule does to the requests it matches.
type Action int

const (
	// Drop closes the connection once After bytes of the response body
	// were sent; with After < 0, before the response headers. The close is
	// clean (the client reads an early end of stream) unless Reset is set
	// (a TCP reset: the client may lose bytes it had not read yet).
	Drop Action = iota + 1
	// Stall stops sending once After bytes of the body were sent (After < 0:
	// before the headers) for For, then goes on; with For == 0 it waits
	// until the client goes away or the proxy is closed.
	Stall
	// Status answers Code (with a Retry-After header when RetryAfter is
	// set) without forwarding the request.
	Status
	// Corrupt flips every bit of the body byte at offset After (counted in
	// the response as sent, so in a 206 answer from the range's start).
	Corrupt
	// IgnoreRange forwards the request without its Range header: the
	// server answers 200 with the whole body, as a server without range
	// support would.
	IgnoreRange
	// ShiftRange forwards a request for bytes=S-E (or S-) as one for the
	// range After bytes later (After <= 0: 1 byte), as a broken cache in
	// front of a registry might: the answer is a 206 whose Content-Range
	// starts later than asked, and is shorter. A request without Range is
	// forwarded as it is.
	ShiftRange
)

func (a Action) String() string {
	switch a {
	case Drop:
		return "drop"
	case Stall:
		return "stall"
	case Status:
		return "status"
	case Corrupt:
		return "corrupt"
	case IgnoreRange:
		return "ignore-range"
	case ShiftRange:
		return "shift-range"
	}
	return fmt.Sprintf("action(%d)", int(a))
}

// Rule injects one fault. Every rule that matches a request applies to it
// (a Status rule answers at once; the others combine).
type Rule struct {
	// Method matches the request method; "" matches any.
	Method string
	// Path is a regular expression matched against the URL path; ""
	// matches any.
	Path string
	// Range is a regular expression matched against the request's Range
	// header ("" when it has none); "" matches any request.
	Range string
	// Attempts are the attempt numbers (1 for the first request with this
	// method and path, 2 for the second...) the rule applies to; empty
	// means every attempt.
	Attempts []int

	Action Action
	// After is a byte count: see the actions.
	After int64
	// For is how long Stall lasts (0: until the client gives up).
	For time.Duration
	// Reset makes Drop send a TCP reset.
	Reset bool
	// Code and RetryAfter are Status's answer.
	Code       int
	RetryAfter string
}

// Request is a logged request.
type Request struct {
	Method  string
	Path    string
	Range   string // the Range header the client sent
	Attempt int    // 1 for the first request with this method and path
	Status  int    // the status sent (0 when dropped before the headers)
	Bytes   int64  // body bytes sent to the client
	Faults  []Action
}

// Proxy is a running fault-injecting proxy.
type Proxy struct {
	// URL is "http://127.0.0.1:PORT"; Host is "127.0.0.1:PORT".
	URL, Host string

	upstream *url.URL
	client   *http.Transport
	srv      *httptest.Server
	closed   chan struct{}
	once     sync.Once

	mu       sync.Mutex
	rules    []compiled
	attempts map[string]int
	log      []*Request
}

type compiled struct {
	Rule
	re      *regexp.Regexp
	rangeRe *regexp.Regexp
}

// New starts a proxy on a loopback port in front of upstream (a base URL
// such as "http://127.0.0.1:5000").
func New(upstream string, rules ...Rule) (*Proxy, error) {
	u, err := url.Parse(upstream)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("faultproxy: bad upstream URL %q", upstream)
	}
	p := &Proxy{
		upstream: u,
		// No compression, so that the body bytes are the server's; no
		// proxy from the environment.
		client:   &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 16},
		closed:   make(chan struct{}),
		attempts: map[string]int{},
	}
	if err := p.SetRules(rules...); err != nil {
		return nil, err
	}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	p.URL = p.srv.URL
	p.Host = strings.TrimPrefix(p.srv.URL, "http://")
	return p, nil
}

// TB is the part of testing.TB that Start uses.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// Start is New for a test: it fails the test on error and closes the proxy
// when the test ends.
func Start(t TB, upstream string, rules ...Rule) *Proxy {
	t.Helper()
	p, err := New(upstream, rules...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// SetRules replaces the rules and starts counting attempts and logging
// requests afresh.
func (p *Proxy) SetRules(rules ...Rule) error {
	var cs []compiled
	for _, r := range rules {
		c := compiled{Rule: r}
		if r.Path != "" {
			re, err := regexp.Compile(r.Path)
			if err != nil {
				return fmt.Errorf("faultproxy: rule path %q: %w", r.Path, err)
			}
			c.re = re
		}
		if r.Range != "" {
			re, err := regexp.Compile(r.Range)
			if err != nil {
				return fmt.Errorf("faultproxy: rule range %q: %w", r.Range, err)
			}
			c.rangeRe = re
		}
		if r.Action < Drop || r.Action > ShiftRange {
			return fmt.Errorf("faultproxy: rule with unknown action %d", r.Action)
		}
		cs = append(cs, c)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = cs
	p.attempts = map[string]int{}
	p.log = nil
	return nil
}

// Requests returns the requests so far whose path matches pathRe ("" for
// all), in arrival order.
func (p *Proxy) Requests(pathRe string) []Request {
	re := regexp.MustCompile(pathRe)
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Request
	for _, r := range p.log {
		if re.MatchString(r.Path) {
			c := *r
			c.Faults = slices.Clone(r.Faults)
			out = append(out, c)
		}
	}
	return out
}

// BodyBytes is the number of response body bytes sent for the requests
// whose path matches pathRe.
func (p *Proxy) BodyBytes(pathRe string) int64 {
	var n int64
	for _, r := range p.Requests(pathRe) {
		n += r.Bytes
	}
	return n
}

// Close stops the proxy, ending stalls that wait for it.
func (p *Proxy) Close() {
	p.once.Do(func() {
		close(p.closed)
		p.srv.CloseClientConnections()
		p.srv.Close()
		p.client.CloseIdleConnections()
	})
}

func (p *Proxy) match(r *http.Request) (*Request, []compiled) {
	p.mu.Lock()
	defer p.mu.Unlock()
	key := r.Method + " " + r.URL.Path
	p.attempts[key]++
	rec := &Request{Method: r.Method, Path: r.URL.Path, Range: r.Header.Get("Range"), Attempt: p.attempts[key]}
	p.log = append(p.log, rec)
	var out []compiled
	for _, c := range p.rules {
		if c.Method != "" && !strings.EqualFold(c.Method, r.Method) {
			continue
		}
		if c.re != nil && !c.re.MatchString(r.URL.Path) {
			continue
		}
		if c.rangeRe != nil && !c.rangeRe.MatchString(rec.Range) {
			continue
		}
		if len(c.Attempts) > 0 && !slices.Contains(c.Attempts, rec.Attempt) {
			continue
		}
		out = append(out, c)
		rec.Faults = append(rec.Faults, c.Action)
	}
	return rec, out
}

// record updates a logged request under the lock.
func (p *Proxy) record(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f()
}

// hopHeaders are not forwarded (RFC 9110 7.6.1).
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	rec, rules := p.match(r)
	var drop, stall, corrupt *compiled
	ignoreRange := false
	var shift int64
	for i := range rules {
		c := &rules[i]
		switch c.Action {
		case Status:
			if c.RetryAfter != "" {
				w.Header().Set("Retry-After", c.RetryAfter)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(c.Code)
			n, _ := fmt.Fprintf(w, `{"errors":[{"code":"UNAVAILABLE","message":"fault injected: HTTP %d"}]}`, c.Code)
			p.record(func() { rec.Status, rec.Bytes = c.Code, int64(n) })
			return
		case Drop:
			drop = c
		case Stall:
			stall = c
		case Corrupt:
			corrupt = c
		case IgnoreRange:
			ignoreRange = true
		case ShiftRange:
			shift = max(c.After, 1)
		}
	}
	if drop != nil && drop.After < 0 {
		p.hangUp(w, drop.Reset)
		return
	}
	if stall != nil && stall.After < 0 && !p.wait(r.Context(), stall.For) {
		p.hangUp(w, false) // returning would send an empty 200
		return
	}

	out, err := p.forwardRequest(r, ignoreRange, shift)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		p.record(func() { rec.Status = http.StatusBadGateway })
		return
	}
	resp, err := p.client.RoundTrip(out)
	if err != nil {
		http.Error(w, "faultproxy: upstream: "+err.Error(), http.StatusBadGateway)
		p.record(func() { rec.Status = http.StatusBadGateway })
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		if !slices.Contains(hopHeaders, http.CanonicalHeaderKey(k)) {
			w.Header()[k] = vs
		}
	}
	w.WriteHeader(resp.StatusCode)
	p.record(func() { rec.Status = resp.StatusCode })
	flusher, _ := w.(http.Flusher)

	var sent int64
	buf := make([]byte, 32<<10)
	stalled := false
	for {
		if drop != nil && sent == drop.After {
			if flusher != nil {
				flusher.Flush()
			}
			p.hangUp(w, drop.Reset)
			return
		}
		if stall != nil && !stalled && sent == stall.After {
			stalled = true
			if flusher != nil {
				flusher.Flush()
			}
			if !p.wait(r.Context(), stall.For) {
				return
			}
		}
		// Stop at the next offset a fault acts on.
		chunk := buf
		limit := func(at int64) {
			if at > sent && at-sent < int64(len(chunk)) {
				chunk = chunk[:at-sent]
			}
		}
		if drop != nil {
			limit(drop.After)
		}
		if stall != nil && !stalled {
			limit(stall.After)
		}
		n, rerr := resp.Body.Read(chunk)
		if n > 0 {
			if corrupt != nil && corrupt.After >= sent && corrupt.After < sent+int64(n) {
				chunk[corrupt.After-sent] ^= 0xff
			}
			m, werr := w.Write(chunk[:n])
			sent += int64(m)
			p.record(func() { rec.Bytes = sent })
			if werr != nil {
				return
			}
		}
		if rerr != nil {
			return
		}
	}
}

// forwardRequest is r for the upstream server.
func (p *Proxy) forwardRequest(r *http.Request, ignoreRange bool, shift int64) (*http.Request, error) {
	u := *p.upstream
	u.Path = r.URL.Path
	u.RawPath = r.URL.RawPath
	u.RawQuery = r.URL.RawQuery
	out, err := http.NewRequestWithContext(r.Context(), r.Method, u.String(), r.Body)
	if err != nil {
		return nil, err
	}
	out.ContentLength = r.ContentLength
	out.Header = r.Header.Clone()
	for _, h := range hopHeaders {
		out.Header.Del(h)
	}
	if ignoreRange {
		out.Header.Del("Range")
		out.Header.Del("If-Range")
	}
	if rng := out.Header.Get("Range"); shift > 0 && rng != "" {
		out.Header.Set("Range", shiftRange(rng, shift))
	}
	return out, nil
}

// shiftRange moves the start of "bytes=S-E" or "bytes=S-" n bytes later;
// anything else is returned as it is.
func shiftRange(rng string, n int64) string {
	spec, ok := strings.CutPrefix(rng, "bytes=")
	if !ok {
		return rng
	}
	s, e, ok := strings.Cut(spec, "-")
	start, err := strconv.ParseInt(s, 10, 64)
	if !ok || err != nil {
		return rng
	}
	return fmt.Sprintf("bytes=%d-%s", start+n, e)
}

// hangUp closes the client's connection without another byte.
func (p *Proxy) hangUp(w http.ResponseWriter, reset bool) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	buf.Flush() // what was written before the fault point is sent
	if tc, ok := conn.(*net.TCPConn); ok && reset {
		tc.SetLinger(0) // close sends a reset
	}
	conn.Close()
}

// wait stalls for d (0: until ctx is done or the proxy closes); false when
// the client or the proxy went away.
func (p *Proxy) wait(ctx context.Context, d time.Duration) bool {
	var timeout <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-timeout:
		return true
	case <-ctx.Done():
		return false
	case <-p.closed:
		return false
	}
}
