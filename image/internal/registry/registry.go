package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/image/internal/blob"
	"github.com/docker2vm/docker2vm/internal/units"
)

// UserAgent is sent to registries.
const UserAgent = "docker2vm"

// Config says which repository to open and how to reach it.
type Config struct {
	// Ref is the image reference (see ParseReference).
	Ref name.Reference
	// Keychain finds credentials.
	Keychain authn.Keychain
	// Insecure lists the registries reached over plain HTTP besides
	// loopback ones (for messages: Ref already says how to reach it).
	Insecure []string
	// CacheDir is the cache root, "" for none (--no-cache).
	CacheDir string
	// Progress receives downloads and cache notes; nil reports nothing.
	Progress *blob.Progress
	// StallTimeout: 0 means $DOCKER2VM_STALL_TIMEOUT, else
	// DefaultStallTimeout.
	StallTimeout time.Duration
	// ParallelDownloads: 0 means $DOCKER2VM_PARALLEL_DOWNLOADS, else
	// DefaultParallelDownloads.
	ParallelDownloads int

	// Policy, when set, replaces the retry counts and waits (tests).
	Policy *Policy
	// SegmentSize, when set, is the size of the segments layers are
	// downloaded in, however small (tests).
	SegmentSize int64
}

// Store serves one repository's manifests and blobs, through the cache
// when there is one. It is a blob.Store.
type Store struct {
	client   *regClient
	ref      name.Reference
	repo     name.Repository
	cache    *blobCache // nil with NoCache
	progress *blob.Progress
	insecure []string
	parallel int   // transfers at once
	segment  int64 // when set, the segment size of layer downloads (tests)

	fetchMu sync.Mutex
	fetch   *fetcher // the layer downloads, from the first Layer
}

var _ blob.Store = (*Store)(nil)

// Open connects to the repository of cfg.Ref.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	pol, err := cfg.policy()
	if err != nil {
		return nil, err
	}
	parallel, err := parallelDownloads(cfg)
	if err != nil {
		return nil, err
	}
	st := &Store{ref: cfg.Ref, repo: cfg.Ref.Context(), progress: cfg.Progress, insecure: cfg.Insecure, parallel: parallel, segment: cfg.SegmentSize}
	if cfg.CacheDir != "" {
		if st.cache, err = newBlobCache(cfg.CacheDir, st.progress); err != nil {
			return nil, err
		}
	}
	st.client, err = newRegClient(ctx, st.repo, cfg.Keychain, pol, st.progress, st.wrap, "manifest "+cfg.Ref.String())
	if err != nil {
		return nil, err
	}
	st.client.cached = st.cache != nil
	return st, nil
}

// Layer opens layer i of layers: from its download, which the first call
// starts with the others (see fetcher). ctx is the run's, under which the
// downloads go on; lctx the layer stream's.
func (s *Store) Layer(ctx, lctx context.Context, layers []v1.Descriptor, names []string, i int) (io.ReadCloser, error) {
	s.fetchMu.Lock()
	if s.fetch == nil {
		s.fetch = newFetcher(ctx, s, layers, names)
	}
	f := s.fetch
	s.fetchMu.Unlock()
	return f.open(lctx, i)
}

// DownloadFailed returns the first layer download that failed for good,
// if one has.
func (s *Store) DownloadFailed() error {
	s.fetchMu.Lock()
	f := s.fetch
	s.fetchMu.Unlock()
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

func (s *Store) Manifest(ctx context.Context, desc v1.Descriptor, what string) ([]byte, error) {
	if err := blob.CheckAlgorithm(desc.Digest, what); err != nil {
		return nil, err
	}
	if desc.Size > blob.MaxManifestSize {
		return nil, hint.New(nil, nil, "%s is %d bytes, more than the %d allowed", what, desc.Size, blob.MaxManifestSize)
	}
	if s.cache != nil {
		if b, ok, err := s.cache.getBytes(ctx, desc, blob.MaxManifestSize); err != nil {
			return nil, err
		} else if ok {
			return b, nil
		}
	}
	b, _, _, err := s.client.manifest(ctx, desc.Digest.String(), what, blob.MaxManifestSize)
	if err != nil {
		return nil, err
	}
	if d := blob.Sha256Of(b); d != desc.Digest {
		return nil, &blob.IntegrityError{What: what, Msg: "got " + d.String()}
	}
	if desc.Size > 0 && int64(len(b)) != desc.Size {
		return nil, &blob.IntegrityError{What: what, Msg: fmt.Sprintf("%d bytes, expected %d", len(b), desc.Size)}
	}
	if s.cache != nil {
		s.cache.put(b) // best effort
	}
	return b, nil
}

func (s *Store) Blob(ctx context.Context, desc v1.Descriptor, what string) (io.ReadCloser, error) {
	if err := blob.CheckAlgorithm(desc.Digest, what); err != nil {
		return nil, err
	}
	isLayer := strings.HasPrefix(what, "layer ")
	if s.cache != nil {
		f, ok, err := s.cache.get(ctx, desc)
		if err != nil {
			return nil, err
		}
		if ok {
			if isLayer && s.progress != nil {
				s.progress.Printf("Using cached %s (%s)\n", what, units.Bytes(desc.Size))
			}
			return f, nil
		}
	}
	var rc io.ReadCloser
	rc, err := s.client.blob(ctx, desc, what)
	if err != nil {
		return nil, err
	}
	if isLayer {
		rc = blob.Watch(s.progress, rc, what, desc.Size, -1)
	}
	if s.cache != nil {
		rc = s.cache.tee(rc, desc)
	}
	return rc, nil
}

func (s *Store) Close() error {
	s.fetchMu.Lock()
	f := s.fetch
	s.fetchMu.Unlock()
	if f != nil {
		f.close()
	}
	s.client.close()
	return nil
}

// Top fetches the manifest or index the reference names. The digest comes
// from the reference, or for a tag from a HEAD request (the registry's
// Docker-Content-Digest); the bytes are then fetched by digest (or taken
// from the cache) and checked against it.
func (s *Store) Top(ctx context.Context) (v1.Descriptor, []byte, error) {
	what := "manifest " + s.ref.String()
	var desc v1.Descriptor
	if d, ok := s.ref.(name.Digest); ok {
		h, err := v1.NewHash(d.DigestStr())
		if err != nil {
			return desc, nil, hint.New(err, nil, "invalid digest in %s", s.ref)
		}
		desc.Digest = h
	} else {
		hd, err := s.client.head(ctx, s.ref.Identifier(), what)
		var te *transport.Error
		switch {
		case err == nil && hd.Digest.Hex != "":
			desc = hd
		case err != nil && (errors.Is(err, blob.ErrNetwork) || ctx.Err() != nil || isNetError(err)):
			return desc, nil, err
		case errors.As(err, &te) && te.StatusCode == http.StatusNotFound:
			return desc, nil, s.tagNotFound(ctx, err)
		case errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden):
			return desc, nil, err
		default:
			// Some registries answer HEAD without a digest: GET by tag.
			b, mt, stated, gerr := s.client.manifest(ctx, s.ref.Identifier(), what, blob.MaxManifestSize)
			if gerr != nil {
				return desc, nil, gerr
			}
			got := blob.Sha256Of(b)
			if stated.Algorithm == "sha256" && stated != got {
				return desc, nil, &blob.IntegrityError{What: what, Msg: fmt.Sprintf("got %s, the registry states %s", got, stated)}
			}
			if s.cache != nil {
				s.cache.put(b)
			}
			if mt == "" {
				mt = blob.SniffManifestType(b)
			}
			return v1.Descriptor{MediaType: mt, Digest: got, Size: int64(len(b))}, b, nil
		}
	}
	b, err := s.Manifest(ctx, desc, "manifest "+desc.Digest.String()+" ("+s.ref.String()+")")
	if err != nil {
		return desc, nil, err
	}
	if desc.MediaType == "" {
		desc.MediaType = blob.SniffManifestType(b)
	}
	desc.Size = int64(len(b))
	return desc, b, nil
}

// tagNotFound adds the tags the repository has, when it lets them be
// listed, to the error of a tag that is not there.
func (s *Store) tagNotFound(ctx context.Context, err error) error {
	tags := s.client.tags(ctx)
	if len(tags) == 0 {
		return err
	}
	sort.Strings(tags)
	shown := tags
	if len(shown) > 20 {
		shown = append(shown[:20:20], fmt.Sprintf("and %d more", len(tags)-20))
	}
	return hint.New(err, []string{fmt.Sprintf("%s has the tags: %s.", s.repo.String(), strings.Join(shown, ", "))},
		"tag %q is not in %s", s.ref.Identifier(), s.repo.String())
}

func isNetError(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &oe) || (errors.As(err, &ne) && ne.Timeout())
}

// wrap turns a registry failure into an Error with hints.
func (s *Store) wrap(err error, what string) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, blob.ErrNetwork) {
		return err
	}
	var ie *blob.IntegrityError
	if errors.As(err, &ie) {
		return err
	}
	if _, ok := err.(*hint.Error); ok {
		return err // already explained
	}
	reg := s.repo.RegistryStr()
	repo := s.repo.String()
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			return hint.New(err, []string{
				fmt.Sprintf("Log in with `docker login %s` (credentials are read from $DOCKER_CONFIG/config.json, by default ~/.docker/config.json, and its credential helpers).", reg),
				"If your credentials are in another Docker config directory, set DOCKER_CONFIG to it.",
				fmt.Sprintf("Check that your account may pull %s.", repo),
			}, "%s: access to %s denied (HTTP %d)", what, repo, te.StatusCode)
		case http.StatusNotFound:
			return hint.New(err, []string{
				fmt.Sprintf("Check the repository name and the tag or digest in %q.", s.ref.String()),
				"If the repository is private, a missing login can look like this: `docker login " + reg + "`.",
			}, "%s: not found in %s", what, repo)
		case http.StatusTooManyRequests:
			return hint.New(err, []string{"The registry rate-limits pulls: wait, or log in (`docker login " + reg + "`) for a higher limit."}, "%s: rate limited by %s", what, reg)
		}
		if te.StatusCode >= 500 {
			return hint.New(err, []string{"The registry failed; try again later."}, "%s: registry %s error (HTTP %d)", what, reg, te.StatusCode)
		}
		return hint.New(err, nil, "%s: registry %s refused the request (HTTP %d)", what, reg, te.StatusCode)
	}
	plainHint := fmt.Sprintf("If %s serves plain HTTP, pass --insecure-registry %s.", reg, reg)
	insecure := IsLoopback(reg) || isInsecure(reg, s.insecure)
	msg := err.Error()
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		h := []string{fmt.Sprintf("Check that a registry is listening at %s (host and port) and that the reference is right.", reg)}
		if !insecure {
			h = append(h, plainHint)
		}
		return hint.New(err, h, "%s: cannot connect to registry %s (connection refused)", what, reg)
	case strings.Contains(msg, "server gave HTTP response to HTTPS client"):
		return hint.New(err, []string{plainHint}, "%s: registry %s speaks plain HTTP", what, reg)
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return hint.New(err, []string{fmt.Sprintf("Check the registry host name %q and your network/DNS.", reg)}, "%s: cannot resolve registry host %s", what, reg)
	}
	var ce *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	if errors.As(err, &ce) || errors.As(err, &ua) || errors.As(err, &hn) || strings.Contains(msg, "x509:") {
		return hint.New(err, []string{
			"Install the registry's CA certificate into the system trust store (or point SSL_CERT_FILE at it).",
			plainHint,
		}, "%s: TLS certificate of %s not trusted", what, reg)
	}
	if isNetError(err) {
		h := []string{fmt.Sprintf("Check the network and that %s is reachable.", reg)}
		if !insecure {
			h = append(h, plainHint)
		}
		return hint.New(err, h, "%s: cannot reach registry %s", what, reg)
	}
	return hint.New(err, nil, "%s: registry %s", what, reg)
}
