package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/image/internal/blob"
	"github.com/docker2vm/docker2vm/internal/units"
)

// Registry transfers fail in ways that say nothing about the image: a
// connection dropped or reset, a registry that stops sending, a server
// error, a rate limit. Those are retried (a blob resumes where it stopped);
// a failure that persists ends as an ErrNetwork error naming the blob, the
// registry and what happened, never as a digest mismatch. Bytes that arrive
// but are wrong are a digest mismatch and are never retried.

// DefaultStallTimeout is how long a registry may send nothing before the
// attempt is given up (see Config.StallTimeout).
const DefaultStallTimeout = 60 * time.Second

// StallTimeoutEnv names the environment variable that sets the stall
// timeout when Config.StallTimeout is 0.
const StallTimeoutEnv = "DOCKER2VM_STALL_TIMEOUT"

// ParseStallTimeout reads a stall timeout: a Go duration such as 90s or 5m,
// more than zero.
func ParseStallTimeout(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || d <= 0 {
		return 0, hint.New(err, []string{"Give a duration such as 90s, 5m or 1h30m."}, "invalid stall timeout %q", s)
	}
	return d, nil
}

// stallTimeout is opts.StallTimeout, else $DOCKER2VM_STALL_TIMEOUT, else the
// default.
func stallTimeout(opts Config) (time.Duration, error) {
	if opts.StallTimeout < 0 {
		return 0, hint.New(nil, nil, "invalid stall timeout %s: it must be more than zero", opts.StallTimeout)
	}
	if opts.StallTimeout > 0 {
		return opts.StallTimeout, nil
	}
	if v := os.Getenv(StallTimeoutEnv); strings.TrimSpace(v) != "" {
		d, err := ParseStallTimeout(v)
		if err != nil {
			return 0, hint.New(err, []string{"Set " + StallTimeoutEnv + " to a duration such as 90s or 5m, or unset it."}, "%s", StallTimeoutEnv)
		}
		return d, nil
	}
	return DefaultStallTimeout, nil
}

// policy is how registry requests are timed out and retried.
func (c Config) policy() (Policy, error) {
	stall, err := stallTimeout(c)
	if err != nil {
		return Policy{}, err
	}
	p := defaultNetPolicy(stall)
	if c.Policy != nil {
		p = *c.Policy
		p.Stall = stall
	}
	return p, nil
}

// Policy says how registry requests are retried.
type Policy struct {
	Stall   time.Duration // no bytes for this long fails an attempt
	Retries int           // attempts after the first
	Backoff time.Duration // wait before the first retry; doubles up to MaxWait
	MaxWait time.Duration
	// MaxRetryAfter is the longest Retry-After honoured; a registry asking
	// for more is not retried.
	MaxRetryAfter time.Duration
}

func defaultNetPolicy(stall time.Duration) Policy {
	return Policy{Stall: stall, Retries: 5, Backoff: 250 * time.Millisecond, MaxWait: 4 * time.Second, MaxRetryAfter: time.Minute}
}

// wait is how long to wait before retry number n (1-based) after err;
// false when the registry asked to wait longer than the policy allows.
func (p Policy) wait(n int, err error) (time.Duration, bool) {
	d := p.Backoff
	for i := 1; i < n && d < p.MaxWait; i++ {
		d *= 2
	}
	d = min(d, p.MaxWait)
	var ra *retryAfterError
	if errors.As(err, &ra) && ra.after > 0 {
		if ra.after > p.MaxRetryAfter {
			return 0, false
		}
		d = max(d, ra.after)
	}
	return d, true
}

// sleepCtx waits for d unless ctx is done first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// retryAfterError is an HTTP error answer that asked to wait (Retry-After).
type retryAfterError struct {
	err   error // a *transport.Error
	after time.Duration
}

func (e *retryAfterError) Error() string { return e.err.Error() }
func (e *retryAfterError) Unwrap() error { return e.err }

// checkStatus returns nil when resp has one of the codes, else the
// registry's error (a *transport.Error, with the Retry-After it asked for).
// It consumes the body of an error answer.
func checkStatus(resp *http.Response, codes ...int) error {
	err := transport.CheckError(resp, codes...)
	if err == nil {
		return nil
	}
	if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
		return &retryAfterError{err: err, after: d}
	}
	return err
}

// parseRetryAfter reads a Retry-After header: seconds, or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		return time.Duration(min(n, 1<<32)) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// retryStatus are the HTTP answers worth another attempt.
func retryStatus(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
		http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// errShortBody: the server ended a body before its stated length.
var errShortBody = errors.New("the connection closed before the end of the data")

// retryable reports whether err is a transfer failure worth another
// attempt: dropped or reset connections, stalls, server errors and rate
// limits. Refused connections, unknown hosts, TLS failures, HTTP errors
// such as 404 and wrong content are not.
func retryable(err error) bool {
	var se *stallError
	if errors.As(err, &se) {
		return true
	}
	var te *transport.Error
	if errors.As(err, &te) {
		return retryStatus(te.StatusCode)
	}
	if errors.Is(err, blob.ErrDigestMismatch) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, errShortBody) {
		return true
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return false // nothing listens: not a blip
	}
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ETIMEDOUT) || errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTUNREACH) {
		return true
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return dnsErr.IsTimeout || dnsErr.IsTemporary
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "read" {
		return true
	}
	return strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe")
}

// stallError is a request that received nothing for the stall timeout.
type stallError struct {
	timeout time.Duration
	phase   string // "waiting for the response" or "reading the response body"
}

func (e *stallError) Error() string {
	return fmt.Sprintf("no data for %s %s", e.timeout, e.phase)
}
func (e *stallError) Timeout() bool { return true }

// stallTransport fails a request when nothing arrives for the timeout:
// while it waits for the response headers (connecting included), and
// while a Read of the body waits. Time the reader spends elsewhere does not
// count.
type stallTransport struct {
	inner   http.RoundTripper
	timeout time.Duration
}

func (t *stallTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	parent := req.Context()
	ctx, cancel := context.WithCancelCause(parent)
	timer := time.AfterFunc(t.timeout, func() {
		cancel(&stallError{timeout: t.timeout, phase: "waiting for the response"})
	})
	resp, err := t.inner.RoundTrip(req.WithContext(ctx))
	fired := !timer.Stop()
	if err == nil && fired {
		resp.Body.Close()
		err = context.Cause(ctx)
	}
	if err != nil {
		var se *stallError
		if parent.Err() == nil && errors.As(context.Cause(ctx), &se) {
			err = se
		}
		cancel(nil)
		return nil, err
	}
	resp.Body = &stallBody{rc: resp.Body, ctx: ctx, parent: parent, cancel: cancel, timeout: t.timeout}
	return resp, nil
}

type stallBody struct {
	rc      io.ReadCloser
	ctx     context.Context // the request's; cancelled on a stall
	parent  context.Context
	cancel  context.CancelCauseFunc
	timeout time.Duration
	timer   *time.Timer
}

func (b *stallBody) Read(p []byte) (int, error) {
	if b.timer == nil {
		b.timer = time.AfterFunc(b.timeout, func() {
			b.cancel(&stallError{timeout: b.timeout, phase: "reading the response body"})
		})
	} else {
		b.timer.Reset(b.timeout)
	}
	n, err := b.rc.Read(p)
	b.timer.Stop()
	if err != nil && err != io.EOF && b.parent.Err() == nil {
		var se *stallError
		if errors.As(context.Cause(b.ctx), &se) {
			err = se
		}
	}
	return n, err
}

func (b *stallBody) Close() error {
	if b.timer != nil {
		b.timer.Stop()
	}
	err := b.rc.Close()
	b.cancel(nil)
	return err
}

// networkError is a registry transfer that failed for good.
type networkError struct {
	what     string // "layer 1 sha256:…", "manifest …"
	registry string
	attempts int
	detail   string // what happened, e.g. "the connection was dropped after 1.2 MiB of 3.0 MiB"
	err      error  // the last failure
	hints    []string
}

func (e *networkError) Error() string {
	return fmt.Sprintf("%s: transfer from registry %s failed after %d attempts: %s", e.what, e.registry, e.attempts, e.detail)
}
func (e *networkError) Unwrap() error        { return e.err }
func (e *networkError) Is(target error) bool { return target == blob.ErrNetwork }
func (e *networkError) Hints() []string      { return e.hints }

// describeFailure says in words what err was; pos is e.g. " after 1.2 MiB
// of 3.0 MiB" ("" when nothing is known).
func describeFailure(err error, pos string) string {
	var se *stallError
	var te *transport.Error
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("the registry sent no data for %s (%s%s)", se.timeout, se.phase, pos)
	case errors.As(err, &te):
		return fmt.Sprintf("the registry answered HTTP %d %s", te.StatusCode, http.StatusText(te.StatusCode))
	case errors.Is(err, syscall.ECONNRESET) || strings.Contains(err.Error(), "connection reset"):
		return "the connection was reset" + pos
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, errShortBody):
		return "the connection was dropped" + pos
	}
	return "the connection failed" + pos + ": " + err.Error()
}

// position renders how far a transfer got: " after 1.2 MiB of 3.0 MiB".
func position(off, size int64) string {
	switch {
	case off <= 0:
		return ""
	case size > 0:
		return fmt.Sprintf(" after %s of %s", units.Bytes(off), units.Bytes(size))
	}
	return " after " + units.Bytes(off)
}
