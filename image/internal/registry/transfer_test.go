package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/docker2vm/docker2vm/image/internal/blob"
	"github.com/docker2vm/docker2vm/internal/testenv"
	"github.com/docker2vm/docker2vm/internal/testtar"
)

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		in                string
		start, end, total int64
		ok                bool
	}{
		{"bytes 100-199/200", 100, 199, 200, true},
		{"bytes 0-0/1", 0, 0, 1, true},
		{"bytes 5-9/*", 5, 9, -1, true},
		{" bytes 5-9/10 ", 5, 9, 10, true},
		{"bytes 10-5/20", 0, 0, 0, false},
		{"bytes 5-9/9", 0, 0, 0, false}, // end beyond the total
		{"bytes 5-9", 0, 0, 0, false},
		{"items 5-9/10", 0, 0, 0, false},
		{"bytes -5/10", 0, 0, 0, false},
		{"bytes x-9/10", 0, 0, 0, false},
		{"", 0, 0, 0, false},
	}
	for _, tc := range tests {
		start, end, total, ok := parseContentRange(tc.in)
		if ok != tc.ok || (ok && (start != tc.start || end != tc.end || total != tc.total)) {
			t.Errorf("parseContentRange(%q) = %d, %d, %d, %v; want %d, %d, %d, %v", tc.in, start, end, total, ok, tc.start, tc.end, tc.total, tc.ok)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"3", 3 * time.Second, true},
		{" 0 ", 0, true},
		{"-1", 0, false},
		{"", 0, false},
		{"soon", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
	}
	for _, tc := range tests {
		got, ok := parseRetryAfter(tc.in, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseRetryAfter(%q) = %s, %v; want %s, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestNetPolicyWait(t *testing.T) {
	p := defaultNetPolicy(time.Minute)
	var got []time.Duration
	for n := 1; n <= 7; n++ {
		d, ok := p.wait(n, errors.New("x"))
		if !ok {
			t.Fatalf("wait(%d) refused", n)
		}
		got = append(got, d)
	}
	want := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second, 4 * time.Second}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("waits %v, want %v", got, want)
	}
	te := &transport.Error{StatusCode: 429}
	if d, ok := p.wait(1, &retryAfterError{err: te, after: 10 * time.Second}); !ok || d != 10*time.Second {
		t.Errorf("Retry-After 10s: %s %v", d, ok)
	}
	if _, ok := p.wait(1, &retryAfterError{err: te, after: 2 * time.Hour}); ok {
		t.Error("a Retry-After of two hours is waited for")
	}
}

func TestRetryable(t *testing.T) {
	opErr := func(op string, err error) error { return &net.OpError{Op: op, Net: "tcp", Err: err} }
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"stall", &stallError{timeout: time.Second, phase: "x"}, true},
		{"unexpected EOF", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true},
		{"EOF before the headers", &url.Error{Op: "Get", URL: "http://x", Err: io.EOF}, true},
		{"short body", errShortBody, true},
		{"reset", opErr("read", syscall.ECONNRESET), true},
		{"broken pipe", opErr("write", syscall.EPIPE), true},
		{"other read error", opErr("read", errors.New("weird")), true},
		{"refused", opErr("dial", syscall.ECONNREFUSED), false},
		{"no such host", &net.DNSError{Err: "no such host", Name: "x", IsNotFound: true}, false},
		{"DNS timeout", &net.DNSError{Err: "timeout", Name: "x", IsTimeout: true}, true},
		{"500", &transport.Error{StatusCode: 500}, true},
		{"503 with Retry-After", &retryAfterError{err: &transport.Error{StatusCode: 503}, after: time.Second}, true},
		{"429", &transport.Error{StatusCode: 429}, true},
		{"404", &transport.Error{StatusCode: 404}, false},
		{"401", &transport.Error{StatusCode: 401}, false},
		{"501", &transport.Error{StatusCode: 501}, false},
		{"digest mismatch", &blob.IntegrityError{What: "x", Msg: "y"}, false},
		{"cancelled", fmt.Errorf("x: %w", context.Canceled), false},
		{"plain error", errors.New("something else"), false},
	}
	for _, tc := range tests {
		if got := retryable(tc.err); got != tc.want {
			t.Errorf("%s: retryable(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

func TestStallTimeoutSetting(t *testing.T) {
	tests := []struct {
		env     string
		opt     time.Duration
		want    time.Duration
		wantErr string
	}{
		{"", 0, DefaultStallTimeout, ""},
		{"90s", 0, 90 * time.Second, ""},
		{" 2m ", 0, 2 * time.Minute, ""},
		{"90s", 5 * time.Second, 5 * time.Second, ""}, // the option (the flag) wins
		{"", 5 * time.Second, 5 * time.Second, ""},
		{"90", 0, 0, StallTimeoutEnv},
		{"0s", 0, 0, StallTimeoutEnv},
		{"-1s", 0, 0, StallTimeoutEnv},
		{"", -time.Second, 0, "must be more than zero"},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%q/%s", tc.env, tc.opt), func(t *testing.T) {
			t.Setenv(StallTimeoutEnv, tc.env)
			p, err := Config{StallTimeout: tc.opt}.policy()
			if tc.wantErr != "" {
				testenv.WantErr(t, err, tc.wantErr)
				return
			}
			if err != nil || p.Stall != tc.want {
				t.Fatalf("stall %s, %v; want %s", p.Stall, err, tc.want)
			}
			if p.Retries != 5 {
				t.Errorf("retries %d", p.Retries)
			}
		})
	}
	if _, err := ParseStallTimeout("soon"); err == nil || !strings.Contains(err.Error(), `invalid stall timeout "soon"`) {
		t.Errorf("ParseStallTimeout: %v", err)
	}
}

// TestStallTransport: a request fails when nothing arrives for the
// timeout, while it waits for the answer or for body bytes; a reader that
// is busy elsewhere between reads does not trip it.
func TestStallTransport(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/headers":
			select {
			case <-release:
			case <-r.Context().Done():
			}
		case "/body":
			w.Header().Set("Content-Length", "2000")
			w.Write(make([]byte, 1000))
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
		case "/quick":
			w.Write(make([]byte, 10000))
		}
	}))
	defer srv.Close()
	const timeout = 200 * time.Millisecond
	client := &http.Client{Transport: &stallTransport{inner: &http.Transport{}, timeout: timeout}}

	_, err := client.Get(srv.URL + "/headers")
	var se *stallError
	if !errors.As(err, &se) || se.phase != "waiting for the response" || !retryable(err) {
		t.Errorf("stalled headers: %v", err)
	}

	resp, err := client.Get(srv.URL + "/body")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(b) != 1000 || !errors.As(err, &se) || se.phase != "reading the response body" {
		t.Errorf("stalled body: %d bytes, %v", len(b), err)
	}

	resp, err = client.Get(srv.URL + "/quick")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := resp.Body.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * timeout) // busy elsewhere
	if b, err := io.ReadAll(resp.Body); err != nil || len(b) != 9999 {
		t.Errorf("a slow reader was timed out: %d bytes, %v", len(b), err)
	}

	// The caller's own cancellation stays a cancellation.
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/headers", nil)
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err = client.Do(req)
	if !errors.Is(err, context.Canceled) || errors.As(err, &se) {
		t.Errorf("cancelled request: %v", err)
	}
}

// fakeRegistry serves one blob at /v2/r/blobs/<digest>, misbehaving as
// told: for request n (from 1) of the blob, how[n] says what to do.
type fakeRegistry struct {
	blob []byte
	dg   v1.Hash
	mu   sync.Mutex
	how  map[int]string
	log  []string // Range header per blob request
	sent int64
}

func (f *fakeRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v2/" {
		return
	}
	if r.URL.Path != "/v2/r/blobs/"+f.dg.String() {
		http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}`, http.StatusNotFound)
		return
	}
	f.mu.Lock()
	f.log = append(f.log, r.Header.Get("Range"))
	how := f.how[len(f.log)]
	f.mu.Unlock()
	count := func(n int) {
		f.mu.Lock()
		f.sent += int64(n)
		f.mu.Unlock()
	}
	start, end := int64(0), int64(len(f.blob)-1)
	ranged := false
	if rng := r.Header.Get("Range"); rng != "" && how != "ignore-range" {
		ranged = true
		if n, _ := fmt.Sscanf(rng, "bytes=%d-%d", &start, &end); n < 1 {
			http.Error(w, "bad range", http.StatusBadRequest)
			return
		}
	}
	if start >= int64(len(f.blob)) || how == "past-end" {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", len(f.blob)))
		http.Error(w, "", http.StatusRequestedRangeNotSatisfiable)
		return
	}
	end = min(end, int64(len(f.blob)-1))
	body := f.blob[start : end+1]
	partial := func() {
		if ranged {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, len(f.blob)))
			w.WriteHeader(http.StatusPartialContent)
		}
	}
	switch how {
	case "drop":
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		partial()
		count(len(body) / 3)
		w.Write(body[:len(body)/3])
		w.(http.Flusher).Flush()
		conn, buf, _ := w.(http.Hijacker).Hijack()
		buf.Flush()
		conn.Close()
	case "short": // a clean end before the blob's end, no length stated
		partial()
		w.(http.Flusher).Flush()
		count(len(body) / 2)
		w.Write(body[:len(body)/2])
	case "wrong-length": // another blob, honestly sized
		w.Header().Set("Content-Length", fmt.Sprint(len(body)-1))
		count(len(body) - 1)
		w.Write(body[1:])
	case "short-range": // the range asked for, less its last 1000 bytes
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end-1000, len(f.blob)))
		w.WriteHeader(http.StatusPartialContent)
		count(len(f.blob[start : end-999]))
		w.Write(f.blob[start : end-999])
	case "wrong-range":
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start+1, end, len(f.blob)))
		w.WriteHeader(http.StatusPartialContent)
		count(len(f.blob[start+1 : end+1]))
		w.Write(f.blob[start+1 : end+1])
	default:
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		partial()
		count(len(body))
		w.Write(body)
	}
}

// quickPolicy retries twice, at once.
var quickPolicy = Policy{Stall: 10 * time.Second, Retries: 2, Backoff: time.Millisecond, MaxWait: time.Millisecond, MaxRetryAfter: time.Second}

// fakeClient is a registry client of fr, served until the test ends.
func fakeClient(t *testing.T, fr *fakeRegistry, pol Policy) *regClient {
	t.Helper()
	srv := httptest.NewServer(fr)
	t.Cleanup(srv.Close)
	repo, err := name.NewRepository(strings.TrimPrefix(srv.URL, "http://")+"/r", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	st := &Store{repo: repo, ref: repo.Tag("x")}
	c, err := newRegClient(context.Background(), repo, authn.NewMultiKeychain(), pol, nil, st.wrap, "manifest x")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.close)
	return c
}

// TestBlobResume drives blobBody against a registry that drops, ends
// early, answers the wrong range or ignores Range.
func TestBlobResume(t *testing.T) {
	data := testtar.Incompressible(7, 300_000)
	dg := blob.Sha256Of(data)
	tests := []struct {
		name   string
		how    map[int]string
		ranges []string // Range headers seen
		sent   int64    // bytes the server sent
		err    []string // parts of the error
	}{
		{"clean", nil, []string{""}, 300_000, nil},
		{"drop then resume", map[int]string{1: "drop"}, []string{"", "bytes=100000-"}, 300_000, nil},
		{"short body then resume", map[int]string{1: "short"}, []string{"", "bytes=150000-"}, 300_000, nil},
		{"range ignored", map[int]string{1: "drop", 2: "ignore-range"}, []string{"", "bytes=100000-"}, 400_000, nil},
		{"wrong range: start over", map[int]string{1: "drop", 2: "wrong-range"}, []string{"", "bytes=100000-", ""}, 100_000 + 199_999 + 300_000, nil},
		{"short range: start over", map[int]string{1: "drop", 2: "short-range"}, []string{"", "bytes=100000-", ""}, 100_000 + 199_000 + 300_000, nil},
		{"range past the end", map[int]string{1: "drop", 2: "past-end"}, []string{"", "bytes=100000-"}, 0,
			[]string{"digest mismatch: the registry refused Range bytes=100000- (HTTP 416, not satisfiable): it has no byte 100000 of the 300000 its descriptor states"}},
		{"wrong length: corrupt, not retried", map[int]string{1: "wrong-length"}, []string{""}, 0,
			[]string{"digest mismatch: the registry serves 299999 bytes, expected 300000"}},
		{"drops until the retries are spent", map[int]string{1: "drop", 2: "drop", 3: "drop"}, []string{"", "bytes=100000-", "bytes=166666-"}, 0,
			[]string{"transfer from registry 127.0.0.1:", "failed after 3 attempts: the connection was dropped after 206.2 KiB of 293.0 KiB"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fr := &fakeRegistry{blob: data, dg: dg, how: tc.how}
			c := fakeClient(t, fr, quickPolicy)
			var said bytes.Buffer
			c.progress = blob.NewProgress(&said, false)
			what := "layer 0 " + dg.String()
			var got []byte
			rc, err := c.blob(context.Background(), v1.Descriptor{Digest: dg, Size: int64(len(data))}, what)
			if err == nil {
				got, err = io.ReadAll(rc)
				rc.Close()
			}
			if fmt.Sprint(fr.log) != fmt.Sprint(tc.ranges) {
				t.Errorf("Range headers %q, want %q", fr.log, tc.ranges)
			}
			if tc.err != nil {
				testenv.WantErr(t, err, append([]string{what}, tc.err...)...)
				if strings.Contains(tc.err[0], "digest mismatch") != errors.Is(err, blob.ErrDigestMismatch) || errors.Is(err, blob.ErrDigestMismatch) == errors.Is(err, blob.ErrNetwork) {
					t.Errorf("%v: ErrNetwork %v, ErrDigestMismatch %v", err, errors.Is(err, blob.ErrNetwork), errors.Is(err, blob.ErrDigestMismatch))
				}
				return
			}
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%d bytes, %v", len(got), err)
			}
			if fr.sent != tc.sent {
				t.Errorf("the server sent %d bytes, want %d", fr.sent, tc.sent)
			}
			// What the registry did is said once.
			want := map[string]string{
				"range ignored":           "ignored the range request for " + what,
				"wrong range: start over": `answered Range bytes=100000- for ` + what + ` with Content-Range "bytes 100001-299999/300000" (it starts at byte 100001, not 100000)`,
				"short range: start over": `with Content-Range "bytes 100000-298999/300000" (it ends at byte 298999, not 299999)`,
			}[tc.name]
			if want != "" && strings.Count(said.String(), want) != 1 {
				t.Errorf("progress %q, want %q once", said.String(), want)
			}
		})
	}

	// Ranges, as segmented downloads ask for them (see fetcher).
	ranges := []struct {
		name       string
		start, end int64
		how        map[int]string
		ranges     []string
	}{
		{"a middle range", 100_000, 200_000, nil, []string{"bytes=100000-199999"}},
		{"the first range", 0, 100_000, nil, []string{"bytes=0-99999"}},
		{"the last range", 200_000, 300_000, nil, []string{"bytes=200000-"}},
		{"drop then resume within the range", 100_000, 200_000, map[int]string{1: "drop"}, []string{"bytes=100000-199999", "bytes=133333-199999"}},
		{"range ignored: skip to it, stop at its end", 100_000, 200_000, map[int]string{1: "ignore-range"}, []string{"bytes=100000-199999"}},
		{"wrong range: start over without Range", 100_000, 200_000, map[int]string{1: "wrong-range"}, []string{"bytes=100000-199999", ""}},
	}
	for _, tc := range ranges {
		t.Run(tc.name, func(t *testing.T) {
			fr := &fakeRegistry{blob: data, dg: dg, how: tc.how}
			c := fakeClient(t, fr, quickPolicy)
			rc, err := c.blobRange(context.Background(), v1.Descriptor{Digest: dg, Size: int64(len(data))}, "layer 1/1", tc.start, tc.end)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(got, data[tc.start:tc.end]) {
				t.Fatalf("%d bytes (want %d), %v", len(got), tc.end-tc.start, err)
			}
			if fmt.Sprint(fr.log) != fmt.Sprint(tc.ranges) {
				t.Errorf("Range headers %q, want %q", fr.log, tc.ranges)
			}
			if ignored := tc.how[1] != ""; c.rangesIgnored() != (ignored && tc.how[1] != "drop") {
				t.Errorf("rangesIgnored = %v", c.rangesIgnored())
			}
		})
	}

	// A descriptor that states more bytes than the data has: a segment
	// past its end is corruption, not a transfer failure.
	t.Run("range past the end", func(t *testing.T) {
		fr := &fakeRegistry{blob: data, dg: dg}
		c := fakeClient(t, fr, defaultNetPolicy(time.Minute))
		_, err := c.blobRange(context.Background(), v1.Descriptor{Digest: dg, Size: 600_000}, "layer 1/1", 400_000, 500_000)
		testenv.WantErr(t, err, "layer 1/1", "no byte 400000 of the 600000 its descriptor states")
		if !errors.Is(err, blob.ErrDigestMismatch) || errors.Is(err, blob.ErrNetwork) || len(fr.log) != 1 {
			t.Errorf("%v (requests %q)", err, fr.log)
		}
	})

	t.Run("not found is not retried", func(t *testing.T) {
		fr := &fakeRegistry{blob: data, dg: dg}
		c := fakeClient(t, fr, defaultNetPolicy(time.Minute))
		other := blob.Sha256Of([]byte("other"))
		_, err := c.blob(context.Background(), v1.Descriptor{Digest: other, Size: 5}, "layer 3 "+other.String())
		testenv.WantErr(t, err, "layer 3 "+other.String(), "not found")
		if errors.Is(err, blob.ErrNetwork) || len(fr.log) != 0 {
			t.Errorf("%v (requests %q)", err, fr.log)
		}
	})
}
