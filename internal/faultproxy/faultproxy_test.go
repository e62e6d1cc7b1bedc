package faultproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// upstream serves body at /blob (with Range support) and counts requests.
func upstream(t *testing.T, body []byte) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/blob" {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "blob", time.Time{}, bytes.NewReader(body))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func testBody() []byte {
	b := make([]byte, 300<<10)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

type result struct {
	status int
	header http.Header
	body   []byte
	err    error // from the request or the body
}

func get(ctx context.Context, url, rng string) result {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	// A transport of its own: no connection reuse across subtests.
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return result{status: resp.StatusCode, header: resp.Header, body: b, err: err}
}

func TestFaults(t *testing.T) {
	body := testBody()
	up := upstream(t, body)
	flipped := bytes.Clone(body)
	flipped[1000] ^= 0xff

	tests := []struct {
		name   string
		rules  []Rule
		rng    string
		check  func(t *testing.T, r result)
		faults []Action
	}{
		{name: "pass through", check: func(t *testing.T, r result) {
			if r.err != nil || r.status != 200 || !bytes.Equal(r.body, body) {
				t.Fatalf("status %d, %d bytes, %v", r.status, len(r.body), r.err)
			}
		}},
		{name: "drop mid-body", rules: []Rule{{Path: "^/blob$", Action: Drop, After: 100_000}}, check: func(t *testing.T, r result) {
			if !errors.Is(r.err, io.ErrUnexpectedEOF) || !bytes.Equal(r.body, body[:100_000]) {
				t.Fatalf("got %d bytes, %v; want 100000 then unexpected EOF", len(r.body), r.err)
			}
		}, faults: []Action{Drop}},
		{name: "drop with a reset", rules: []Rule{{Action: Drop, After: 50_000, Reset: true}}, check: func(t *testing.T, r result) {
			if r.err == nil || len(r.body) > 50_000 {
				t.Fatalf("got %d bytes, %v; want at most 50000 then an error", len(r.body), r.err)
			}
		}, faults: []Action{Drop}},
		{name: "drop before headers", rules: []Rule{{Action: Drop, After: -1}}, check: func(t *testing.T, r result) {
			if r.err == nil || r.status != 0 {
				t.Fatalf("status %d, %v; want no response", r.status, r.err)
			}
		}, faults: []Action{Drop}},
		{name: "other path untouched", rules: []Rule{{Path: "^/other$", Action: Drop, After: 10}}, check: func(t *testing.T, r result) {
			if r.err != nil || !bytes.Equal(r.body, body) {
				t.Fatalf("%d bytes, %v", len(r.body), r.err)
			}
		}},
		{name: "other method untouched", rules: []Rule{{Method: "HEAD", Action: Drop, After: 10}}, check: func(t *testing.T, r result) {
			if r.err != nil || !bytes.Equal(r.body, body) {
				t.Fatalf("%d bytes, %v", len(r.body), r.err)
			}
		}},
		{name: "status", rules: []Rule{{Action: Status, Code: 503, RetryAfter: "1"}}, check: func(t *testing.T, r result) {
			if r.status != 503 || !strings.Contains(string(r.body), "fault injected") {
				t.Fatalf("status %d %q", r.status, r.body)
			}
		}, faults: []Action{Status}},
		{name: "corrupt", rules: []Rule{{Action: Corrupt, After: 1000}}, check: func(t *testing.T, r result) {
			if r.err != nil || !bytes.Equal(r.body, flipped) {
				t.Fatalf("body not flipped at 1000: %v", r.err)
			}
		}, faults: []Action{Corrupt}},
		{name: "range honoured", rng: "bytes=1000-", check: func(t *testing.T, r result) {
			if r.status != 206 || !bytes.Equal(r.body, body[1000:]) {
				t.Fatalf("status %d, %d bytes", r.status, len(r.body))
			}
		}},
		{name: "range ignored", rng: "bytes=1000-", rules: []Rule{{Action: IgnoreRange}}, check: func(t *testing.T, r result) {
			if r.status != 200 || !bytes.Equal(r.body, body) {
				t.Fatalf("status %d, %d bytes", r.status, len(r.body))
			}
		}, faults: []Action{IgnoreRange}},
		{name: "range shifted", rng: "bytes=1000-1999", rules: []Rule{{Action: ShiftRange, After: 10}}, check: func(t *testing.T, r result) {
			if r.status != 206 || !bytes.Equal(r.body, body[1010:2000]) || r.header.Get("Content-Range") != fmt.Sprintf("bytes 1010-1999/%d", len(body)) {
				t.Fatalf("status %d, %d bytes, Content-Range %q", r.status, len(r.body), r.header.Get("Content-Range"))
			}
		}, faults: []Action{ShiftRange}},
		{name: "stall for a while", rules: []Rule{{Action: Stall, After: 10_000, For: 200 * time.Millisecond}}, check: func(t *testing.T, r result) {
			if r.err != nil || !bytes.Equal(r.body, body) {
				t.Fatalf("%d bytes, %v", len(r.body), r.err)
			}
		}, faults: []Action{Stall}},
		{name: "corrupt after a range start", rng: "bytes=500-", rules: []Rule{{Action: Corrupt, After: 500}}, check: func(t *testing.T, r result) {
			if r.status != 206 || !bytes.Equal(r.body, flipped[500:]) {
				t.Fatalf("status %d: the flip is not at offset 500 of the answer", r.status)
			}
		}, faults: []Action{Corrupt}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := Start(t, up.URL, tc.rules...)
			start := time.Now()
			r := get(context.Background(), p.URL+"/blob", tc.rng)
			tc.check(t, r)
			reqs := p.Requests("")
			if len(reqs) != 1 {
				t.Fatalf("logged %d requests", len(reqs))
			}
			if got := reqs[0]; got.Path != "/blob" || got.Range != tc.rng || got.Attempt != 1 || len(got.Faults) != len(tc.faults) {
				t.Errorf("logged %+v", got)
			}
			if tc.name == "stall for a while" && time.Since(start) < 200*time.Millisecond {
				t.Errorf("the stall did not last")
			}
			if tc.name == "pass through" {
				// The proxy counts a write when it returns, which may be
				// after the client has read it.
				deadline := time.Now().Add(5 * time.Second)
				for p.BodyBytes("^/blob$") != int64(len(body)) && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
				}
				if got := p.BodyBytes("^/blob$"); got != int64(len(body)) {
					t.Errorf("BodyBytes %d, want %d", got, len(body))
				}
			}
		})
	}
}

func TestAttempts(t *testing.T) {
	body := testBody()
	up := upstream(t, body)
	p := Start(t, up.URL,
		Rule{Path: "/blob", Attempts: []int{1, 2}, Action: Status, Code: 500},
		Rule{Path: "/blob", Attempts: []int{3}, Action: Drop, After: 10},
	)
	for i, want := range []int{500, 500, 200, 200} {
		r := get(context.Background(), p.URL+"/blob", "")
		if r.status != want {
			t.Fatalf("attempt %d: status %d, want %d", i+1, r.status, want)
		}
		if i == 2 && (!errors.Is(r.err, io.ErrUnexpectedEOF) || len(r.body) != 10) {
			t.Fatalf("attempt 3: %d bytes, %v", len(r.body), r.err)
		}
		if i == 3 && (r.err != nil || !bytes.Equal(r.body, body)) {
			t.Fatalf("attempt 4: %d bytes, %v", len(r.body), r.err)
		}
	}
	reqs := p.Requests("/blob")
	for i, r := range reqs {
		if r.Attempt != i+1 {
			t.Errorf("request %d logged as attempt %d", i+1, r.Attempt)
		}
	}
	if got := p.BodyBytes("/blob"); got < int64(len(body))+10 {
		t.Errorf("BodyBytes %d", got)
	}
	// SetRules starts afresh.
	if err := p.SetRules(); err != nil {
		t.Fatal(err)
	}
	if r := get(context.Background(), p.URL+"/blob", ""); r.status != 200 || len(p.Requests("")) != 1 || p.Requests("")[0].Attempt != 1 {
		t.Errorf("after SetRules: status %d, log %+v", r.status, p.Requests(""))
	}
	if err := p.SetRules(Rule{Path: "(", Action: Drop}); err == nil {
		t.Error("a bad path pattern was accepted")
	}
	if err := p.SetRules(Rule{Path: "x"}); err == nil {
		t.Error("a rule without an action was accepted")
	}
}

// TestRangeRule: a rule with a Range pattern applies to the requests whose
// Range header matches it, and only those.
func TestRangeRule(t *testing.T) {
	body := testBody()
	up := upstream(t, body)
	p := Start(t, up.URL, Rule{Path: "/blob", Range: "^bytes=100-", Action: Status, Code: 503})
	for _, tc := range []struct {
		rng    string
		status int
	}{
		{"", 200},
		{"bytes=0-99", 206},
		{"bytes=100-199", 503},
		{"bytes=1000-", 206},
	} {
		if r := get(context.Background(), p.URL+"/blob", tc.rng); r.status != tc.status {
			t.Errorf("Range %q: status %d, want %d", tc.rng, r.status, tc.status)
		}
	}
	if err := p.SetRules(Rule{Range: "(", Action: Drop}); err == nil {
		t.Error("a bad range pattern was accepted")
	}
}

// TestStallForever: a stall without an end lasts until the client gives up,
// and Close ends it too.
func TestStallForever(t *testing.T) {
	up := upstream(t, testBody())
	p := Start(t, up.URL, Rule{Action: Stall, After: 1000})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	r := get(ctx, p.URL+"/blob", "")
	if !errors.Is(r.err, context.DeadlineExceeded) || len(r.body) != 1000 {
		t.Fatalf("got %d bytes, %v; want 1000 then the deadline", len(r.body), r.err)
	}

	p2 := Start(t, up.URL, Rule{Action: Stall, After: -1})
	done := make(chan result, 1)
	go func() { done <- get(context.Background(), p2.URL+"/blob", "") }()
	for len(p2.Requests("")) == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	p2.Close()
	select {
	case r := <-done:
		if r.err == nil {
			t.Errorf("a request stalled before its headers succeeded after Close: status %d", r.status)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not end a stall")
	}
}
