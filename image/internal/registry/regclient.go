package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/image/internal/blob"
)

// regClient speaks the registry API (distribution spec) for one
// repository: manifests by tag or digest, and blobs, which resume with a
// Range request after a dropped connection. Authentication (basic or
// bearer tokens) and the choice of HTTPS or plain HTTP are
// go-containerregistry's transport.
type regClient struct {
	repo     name.Repository
	registry string // host[:port], for messages
	client   *http.Client
	base     *http.Transport // closed with the client
	pol      Policy
	progress *blob.Progress
	failHint func(err error, what string) error // explains a failure that is not retried
	cached   bool                               // complete blobs are kept in a cache

	// ranges is what the registry does with Range requests (rangesUnknown
	// until it answers one). Once it has ignored one (answered with the
	// whole blob, or with a Content-Range other than the one asked for),
	// it is sent no more: a blob is fetched whole, one request at a time,
	// and a resume reads it again from its start (see blobBody, fetcher).
	ranges atomic.Int32
}

// What a registry does with Range requests.
const (
	rangesUnknown int32 = iota
	rangesHonoured
	rangesIgnored
)

// rangesHonoured reports whether the registry answered a Range request
// with the range, and has not ignored one since.
func (c *regClient) rangesHonoured() bool { return c.ranges.Load() == rangesHonoured }

// rangesIgnored reports whether the registry ignored a Range request.
func (c *regClient) rangesIgnored() bool { return c.ranges.Load() == rangesIgnored }

// noteRanges records an answer to a Range request; it reports whether
// that changed what is known (an ignored request is remembered for good).
func (c *regClient) noteRanges(honoured bool) bool {
	if honoured {
		return c.ranges.CompareAndSwap(rangesUnknown, rangesHonoured)
	}
	return c.ranges.Swap(rangesIgnored) != rangesIgnored
}

var manifestAccept = strings.Join([]string{
	string(types.OCIManifestSchema1), string(types.OCIImageIndex),
	string(types.DockerManifestSchema2), string(types.DockerManifestList),
	string(types.DockerManifestSchema1), string(types.DockerManifestSchema1Signed),
}, ",")

// newRegClient authenticates against the registry of repo (a GET /v2/ and,
// for bearer auth, a token request), retrying transfer failures; what names
// the first thing wanted, for messages.
func newRegClient(ctx context.Context, repo name.Repository, keychain authn.Keychain, pol Policy, p *blob.Progress, failHint func(error, string) error, what string) (*regClient, error) {
	c := &regClient{repo: repo, registry: repo.RegistryStr(), pol: pol, progress: p, failHint: failHint}
	auth, err := authn.Resolve(ctx, keychain, repo)
	if err != nil {
		return nil, hint.New(err, []string{"Check the credential helpers configured in your Docker config ($DOCKER_CONFIG/config.json or ~/.docker/config.json)."},
			"reading credentials for %s", c.registry)
	}
	base := remote.DefaultTransport.(*http.Transport).Clone()
	// Bytes as stored: a transparently decompressed answer would count
	// other offsets than a Range request names.
	base.DisableCompression = true
	c.base = base
	var rt http.RoundTripper = &stallTransport{inner: base, timeout: pol.Stall}
	rt = transport.NewUserAgent(rt, UserAgent)
	var tr http.RoundTripper
	var att attempts
	err = c.retry(ctx, &att, what, func() error {
		var err error
		tr, err = transport.NewWithContext(ctx, repo.Registry, auth, rt, []string{repo.Scope(transport.PullScope)})
		return err
	})
	if err != nil {
		base.CloseIdleConnections()
		return nil, err
	}
	c.client = &http.Client{Transport: tr, CheckRedirect: checkRedirect}
	return c, nil
}

func (c *regClient) close() {
	if c != nil && c.base != nil {
		c.base.CloseIdleConnections()
	}
}

// checkRedirect refuses a redirect from a registry to a private or
// link-local address given as an IP (a cloud metadata service, say), and
// long chains.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if len(via) == 0 {
		return nil
	}
	from, to := via[0].URL.Hostname(), req.URL.Hostname()
	if from == to {
		return nil
	}
	if ip := net.ParseIP(to); ip != nil && (ip.IsPrivate() || ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsUnspecified()) {
		if fip := net.ParseIP(from); fip == nil || !(fip.IsPrivate() || fip.IsLoopback()) {
			return fmt.Errorf("refusing a redirect from %s to the private address %s", from, to)
		}
	}
	return nil
}

func (c *regClient) url(kind, id string) string {
	u := url.URL{Scheme: c.repo.Scheme(), Host: c.repo.RegistryStr(), Path: fmt.Sprintf("/v2/%s/%s/%s", c.repo.RepositoryStr(), kind, id)}
	return u.String()
}

// attempts counts the failed attempts of one transfer (a blob's resumes
// share them).
type attempts struct {
	failed int
}

// retry runs op until it succeeds, fails in a way not worth retrying, or
// the policy's retries are spent (then the error is an ErrNetwork error
// naming what).
func (c *regClient) retry(ctx context.Context, att *attempts, what string, op func() error) error {
	return c.retryAt(ctx, att, what, func() (string, error) { return "", op() })
}

// retryAt is retry for an op that also says how far it got (for messages).
func (c *regClient) retryAt(ctx context.Context, att *attempts, what string, op func() (pos string, err error)) error {
	for {
		pos, err := op()
		if err == nil {
			return nil
		}
		if err := c.afterFailure(ctx, att, err, what, pos); err != nil {
			return err
		}
	}
}

// afterFailure decides what follows a failed attempt: nil to try again
// (after the policy's wait), or the error to return: err explained when it
// is not worth retrying, an ErrNetwork error when the retries are spent.
// pos says how far the transfer got, for messages.
func (c *regClient) afterFailure(ctx context.Context, att *attempts, err error, what, pos string) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if !retryable(err) {
		return c.failHint(err, what)
	}
	att.failed++
	wait, ok := c.pol.wait(att.failed, err)
	if !ok || att.failed > c.pol.Retries {
		return c.networkError(err, what, att.failed, pos)
	}
	c.progress.Printf("Retrying %s in %s (attempt %d of %d): %s\n", what, wait.Round(10*time.Millisecond), att.failed+1, c.pol.Retries+1, describeFailure(err, pos))
	return sleepCtx(ctx, wait)
}

func (c *regClient) networkError(err error, what string, n int, pos string) error {
	e := &networkError{what: what, registry: c.registry, attempts: n, detail: describeFailure(err, pos), err: err}
	var se *stallError
	var te *transport.Error
	switch {
	case errors.As(err, &se):
		e.hints = append(e.hints, fmt.Sprintf("The registry stopped sending for %s. On a slow or congested link raise the limit with --stall-timeout (e.g. --stall-timeout 5m) or %s=5m.", se.timeout, StallTimeoutEnv))
	case errors.As(err, &te) && te.StatusCode == http.StatusTooManyRequests:
		e.hints = append(e.hints, "The registry rate-limits pulls: wait, or log in (`docker login "+c.registry+"`) for a higher limit.")
	case errors.As(err, &te):
		e.hints = append(e.hints, "The registry kept failing: try again later.")
	}
	if !errors.As(err, &te) {
		e.hints = append(e.hints, fmt.Sprintf("Check the network and that %s is reachable, then run again.", c.registry))
	}
	if c.cached {
		e.hints = append(e.hints, "Blobs that were downloaded completely are kept in the blob cache, so running again downloads only the rest (a partly downloaded blob starts over).")
	}
	return e
}

// get sends a GET (or HEAD) and checks its status; the caller closes the
// body of a successful answer.
func (c *regClient) do(ctx context.Context, method, u string, hdr http.Header, codes ...int) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, err
	}
	if err := checkStatus(resp, codes...); err != nil {
		resp.Body.Close()
		return nil, err
	}
	return resp, nil
}

// head asks for the descriptor of the manifest ref names (by tag or
// digest): its digest (Docker-Content-Digest), media type and size.
func (c *regClient) head(ctx context.Context, id, what string) (v1.Descriptor, error) {
	var d v1.Descriptor
	var att attempts
	err := c.retry(ctx, &att, what, func() error {
		resp, err := c.do(ctx, http.MethodHead, c.url("manifests", id), http.Header{"Accept": {manifestAccept}}, http.StatusOK)
		if err != nil {
			return err
		}
		resp.Body.Close()
		d = v1.Descriptor{MediaType: types.MediaType(mediaTypeOf(resp)), Size: resp.ContentLength}
		if h, err := v1.NewHash(resp.Header.Get("Docker-Content-Digest")); err == nil {
			d.Digest = h
		}
		return nil
	})
	return d, err
}

func mediaTypeOf(resp *http.Response) string {
	mt, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
	return strings.TrimSpace(mt)
}

// manifest fetches the manifest or index id names (a tag or a digest),
// at most limit bytes. It returns the bytes unverified, with the media type
// and the digest the registry stated (Docker-Content-Digest), if any.
func (c *regClient) manifest(ctx context.Context, id, what string, limit int64) ([]byte, types.MediaType, v1.Hash, error) {
	var b []byte
	var mt types.MediaType
	var stated v1.Hash
	var att attempts
	err := c.retryAt(ctx, &att, what, func() (string, error) {
		resp, err := c.do(ctx, http.MethodGet, c.url("manifests", id), http.Header{"Accept": {manifestAccept}}, http.StatusOK)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		if resp.ContentLength > limit {
			return "", hint.New(nil, nil, "%s is %d bytes, more than the %d allowed", what, resp.ContentLength, limit)
		}
		b, err = io.ReadAll(io.LimitReader(resp.Body, limit+1))
		if err != nil {
			return position(int64(len(b)), resp.ContentLength), err
		}
		if int64(len(b)) > limit {
			return "", hint.New(nil, nil, "%s is more than the %d bytes allowed", what, limit)
		}
		mt = types.MediaType(mediaTypeOf(resp))
		stated, _ = v1.NewHash(resp.Header.Get("Docker-Content-Digest"))
		return "", nil
	})
	if err != nil {
		return nil, "", v1.Hash{}, err
	}
	return b, mt, stated, nil
}

// tags lists the repository's tags (the first page: at most 1,000), for
// messages; nil when the registry does not allow listing.
func (c *regClient) tags(ctx context.Context) []string {
	u := url.URL{Scheme: c.repo.Scheme(), Host: c.repo.RegistryStr(), Path: fmt.Sprintf("/v2/%s/tags/list", c.repo.RepositoryStr()), RawQuery: "n=1000"}
	resp, err := c.do(ctx, http.MethodGet, u.String(), nil, http.StatusOK)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var list struct {
		Tags []string `json:"tags"`
	}
	if json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&list) != nil {
		return nil
	}
	return list.Tags
}

// blob opens a blob for reading; see blobBody.
func (c *regClient) blob(ctx context.Context, desc v1.Descriptor, what string) (*blobBody, error) {
	return c.blobRange(ctx, desc, what, 0, 0)
}

// blobRange opens bytes [start, end) of a blob for reading (end 0: to the
// blob's end), with a Range request unless that is the whole blob.
func (c *regClient) blobRange(ctx context.Context, desc v1.Descriptor, what string, start, end int64) (*blobBody, error) {
	b := &blobBody{c: c, ctx: ctx, url: c.url("blobs", desc.Digest.String()), what: what, size: desc.Size, off: start, end: end}
	if end > 0 && desc.Size > 0 && end == desc.Size {
		b.end = 0
	}
	if err := b.open(); err != nil {
		return nil, err
	}
	return b, nil
}

// blobBody reads a blob, or a range of it, from the registry. When a
// transfer fails in a way worth retrying (see retryable), it asks again
// from the first byte it has not handed out yet: with a Range request,
// checked against the answer's Content-Range, or, from a registry that
// ignores Range, by reading the blob again from its start and dropping the
// bytes before the first one wanted. The reader above it (the digest
// check, the cache) sees one unbroken stream; whether its bytes are right
// is theirs to check. The policy's retries count for the whole blob (or
// range), resumes included.
type blobBody struct {
	c    *regClient
	ctx  context.Context
	url  string
	what string
	size int64 // from the descriptor; <= 0 unknown
	end  int64 // the end of the range wanted (exclusive); 0: the blob's end

	body  io.ReadCloser // the current answer, nil between attempts
	whole bool          // the current answer runs to the blob's end (it was not asked for a range, or ignored it)
	off   int64         // the next byte to hand out
	att   attempts
	err   error // sticky
}

// open asks for the blob from b.off, retrying.
func (b *blobBody) open() error {
	return b.c.retryAt(b.ctx, &b.att, b.what, func() (string, error) {
		return b.pos(), b.request()
	})
}

func (b *blobBody) pos() string { return position(b.off, b.size) }

// rangeHeader is the Range to ask for: "" for the whole blob, and for any
// part of it from a registry that ignores Range.
func (b *blobBody) rangeHeader() string {
	switch {
	case b.c.rangesIgnored():
		return ""
	case b.end > 0:
		return fmt.Sprintf("bytes=%d-%d", b.off, b.end-1)
	case b.off > 0:
		return fmt.Sprintf("bytes=%d-", b.off)
	}
	return ""
}

// extend makes the range wanted run to end (0: the blob's end); only
// while the current answer is the whole blob (see whole).
func (b *blobBody) extend(end int64) {
	if end == b.size {
		end = 0
	}
	b.end = end
}

func (b *blobBody) request() error {
	b.whole = false
	hdr := http.Header{}
	rng := b.rangeHeader()
	if rng != "" {
		hdr.Set("Range", rng)
	}
	resp, err := b.c.do(b.ctx, http.MethodGet, b.url, hdr, http.StatusOK, http.StatusPartialContent)
	var te *transport.Error
	if errors.As(err, &te) && te.StatusCode == http.StatusRequestedRangeNotSatisfiable && rng != "" {
		// Not a transfer failure: the blob is shorter than its descriptor
		// says (or the registry contradicts a Content-Range it sent).
		return &blob.IntegrityError{What: b.what, Msg: fmt.Sprintf("the registry refused Range %s (HTTP 416, not satisfiable): it has no byte %d of the %d its descriptor states", rng, b.off, b.size)}
	}
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusOK && resp.ContentLength >= 0 && b.size > 0 && resp.ContentLength != b.size {
		// Not a transfer failure: the registry serves other content.
		resp.Body.Close()
		return &blob.IntegrityError{What: b.what, Msg: fmt.Sprintf("the registry serves %d bytes, expected %d", resp.ContentLength, b.size)}
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		// The whole blob: asked for (a first request, or a resume from a
		// registry known to ignore Range), or Range was ignored. Skip to
		// the first byte wanted.
		if rng != "" && b.c.noteRanges(false) {
			b.c.progress.Printf("Registry %s ignored the range request for %s: reading it from its start, and each blob from this registry whole\n", b.c.registry, b.what)
		}
		if _, err := io.CopyN(io.Discard, resp.Body, b.off); err != nil {
			resp.Body.Close()
			if err == io.EOF {
				err = errShortBody
			}
			return err
		}
		b.whole = true
	case rng != "" && resp.StatusCode == http.StatusPartialContent:
		cr := resp.Header.Get("Content-Range")
		if what := b.checkContentRange(cr); what != "" {
			resp.Body.Close()
			// Not the range asked for: go on without Range.
			if b.c.noteRanges(false) {
				b.c.progress.Printf("Registry %s answered Range %s for %s with Content-Range %q (%s): reading it from its start, and each blob from this registry whole\n", b.c.registry, rng, b.what, cr, what)
			}
			return b.request()
		}
		b.c.noteRanges(true)
		b.whole = b.end == 0
	default:
		resp.Body.Close()
		return fmt.Errorf("unexpected HTTP %d for a request of %s", resp.StatusCode, rng)
	}
	b.body = resp.Body
	return nil
}

// checkContentRange says how the Content-Range of an answer to a range
// request differs from the range asked for, "" when it does not.
func (b *blobBody) checkContentRange(v string) string {
	start, end, total, ok := parseContentRange(v)
	wantEnd := b.end - 1
	if b.end == 0 {
		wantEnd = b.size - 1 // unknown (-2) when the size is
	}
	switch {
	case !ok:
		return "not a byte range"
	case start != b.off:
		return fmt.Sprintf("it starts at byte %d, not %d", start, b.off)
	case total >= 0 && b.size > 0 && total != b.size:
		return fmt.Sprintf("it states a blob of %d bytes, not %d", total, b.size)
	case wantEnd >= 0 && end != wantEnd:
		return fmt.Sprintf("it ends at byte %d, not %d", end, wantEnd)
	}
	return ""
}

// parseContentRange reads "bytes START-END/TOTAL" (TOTAL may be "*": -1).
func parseContentRange(v string) (start, end, total int64, ok bool) {
	rest, found := strings.CutPrefix(strings.TrimSpace(v), "bytes ")
	if !found {
		return 0, 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, 0, false
	}
	s, e, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, 0, false
	}
	start, err1 := strconv.ParseInt(s, 10, 64)
	end, err2 := strconv.ParseInt(e, 10, 64)
	if err1 != nil || err2 != nil || start < 0 || end < start {
		return 0, 0, 0, false
	}
	total = -1
	if tot != "*" {
		t, err := strconv.ParseInt(tot, 10, 64)
		if err != nil || t <= end {
			return 0, 0, 0, false
		}
		total = t
	}
	return start, end, total, true
}

func (b *blobBody) Read(p []byte) (int, error) {
	for {
		if b.err != nil {
			return 0, b.err
		}
		if b.end > 0 {
			if b.off >= b.end {
				if b.body != nil {
					b.body.Close() // the rest of a whole blob answered to a Range request
					b.body = nil
				}
				return 0, io.EOF
			}
			p = p[:min(int64(len(p)), b.end-b.off)]
		}
		if b.body == nil {
			if err := b.open(); err != nil {
				b.err = err
				return 0, err
			}
		}
		n, err := b.body.Read(p)
		b.off += int64(n)
		if err == io.EOF {
			if want := b.wantEnd(); want > 0 && b.off < want {
				err = errShortBody // a clean close before the end
			}
		}
		if err == nil || err == io.EOF {
			if err == io.EOF && b.end > 0 && b.off >= b.end {
				err = nil // the range is done: EOF comes with the next Read
			}
			return n, err
		}
		b.body.Close()
		b.body = nil
		b.err = b.c.afterFailure(b.ctx, &b.att, err, b.what, b.pos())
		if n > 0 {
			return n, nil // the error (or the next attempt) comes with the next Read
		}
	}
}

// wantEnd is where the transfer ends: the range's end, else the blob's
// size (0 when unknown).
func (b *blobBody) wantEnd() int64 {
	if b.end > 0 {
		return b.end
	}
	return max(b.size, 0)
}

func (b *blobBody) Close() error {
	if b.body != nil {
		b.body.Close()
		b.body = nil
	}
	if b.err == nil {
		b.err = errors.New("read after close")
	}
	return nil
}
