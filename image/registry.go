package image

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

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/internal/units"
)

// UserAgent is sent to registries.
const UserAgent = "docker2vm"

// registryStore serves one repository's manifests and blobs, through the
// cache when there is one.
type registryStore struct {
	client   *regClient
	ref      name.Reference
	repo     name.Repository
	cache    *blobCache // nil with NoCache
	progress *progress
	insecure []string
	parallel int   // transfers at once
	segment  int64 // when set, the segment size of layer downloads (tests)

	fetchMu sync.Mutex
	fetch   *fetcher // the layer downloads, from the first OpenLayer
}

// layer opens layer i of img for OpenLayer: from its download, which the
// first call starts with the others (see fetcher). ctx is the run's, under
// which the downloads go on; lctx the layer stream's.
func (s *registryStore) layer(ctx, lctx context.Context, img *Image, i int) (io.ReadCloser, error) {
	s.fetchMu.Lock()
	if s.fetch == nil {
		names := make([]string, len(img.layers))
		for j := range names {
			names[j] = img.layerName(j)
		}
		s.fetch = newFetcher(ctx, s, img.layers, names)
	}
	f := s.fetch
	s.fetchMu.Unlock()
	return f.open(lctx, i)
}

func (s *registryStore) manifest(ctx context.Context, desc v1.Descriptor, what string) ([]byte, error) {
	if err := checkAlgorithm(desc.Digest, what); err != nil {
		return nil, err
	}
	if desc.Size > maxManifestSize {
		return nil, newError(nil, nil, "%s is %d bytes, more than the %d allowed", what, desc.Size, maxManifestSize)
	}
	if s.cache != nil {
		if b, ok, err := s.cache.getBytes(ctx, desc, maxManifestSize); err != nil {
			return nil, err
		} else if ok {
			return b, nil
		}
	}
	b, _, _, err := s.client.manifest(ctx, desc.Digest.String(), what, maxManifestSize)
	if err != nil {
		return nil, err
	}
	if d := sha256Of(b); d != desc.Digest {
		return nil, &integrityError{what: what, msg: "got " + d.String()}
	}
	if desc.Size > 0 && int64(len(b)) != desc.Size {
		return nil, &integrityError{what: what, msg: fmt.Sprintf("%d bytes, expected %d", len(b), desc.Size)}
	}
	if s.cache != nil {
		s.cache.put(b) // best effort
	}
	return b, nil
}

func (s *registryStore) blob(ctx context.Context, desc v1.Descriptor, what string) (io.ReadCloser, error) {
	if err := checkAlgorithm(desc.Digest, what); err != nil {
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
		rc = wrap(s.progress, rc, what, desc.Size, -1)
	}
	if s.cache != nil {
		rc = s.cache.tee(rc, desc)
	}
	return rc, nil
}

func (s *registryStore) close() error {
	s.fetchMu.Lock()
	f := s.fetch
	s.fetchMu.Unlock()
	if f != nil {
		f.close()
	}
	s.client.close()
	return nil
}

func resolveRegistry(ctx context.Context, src Source, opts Options) (*Image, error) {
	ref, err := ParseReference(src.Ref, opts.InsecureRegistries)
	if err != nil {
		return nil, err
	}
	pol, err := opts.netPolicy()
	if err != nil {
		return nil, err
	}
	parallel, err := parallelDownloads(opts)
	if err != nil {
		return nil, err
	}
	st := &registryStore{ref: ref, repo: ref.Context(), progress: newProgress(opts.Progress, opts.PlainProgress), insecure: opts.InsecureRegistries, parallel: parallel, segment: opts.segmentSize}
	if !opts.NoCache {
		if st.cache, err = newBlobCache(opts.CacheDir, st.progress); err != nil {
			return nil, err
		}
	}
	st.client, err = newRegClient(ctx, st.repo, opts.Keychain, pol, st.progress, st.wrap, "manifest "+ref.String())
	if err != nil {
		return nil, err
	}
	st.client.cached = st.cache != nil
	img, err := st.resolve(ctx, opts)
	if err != nil {
		st.close()
		return nil, err
	}
	return img, nil
}

func (s *registryStore) resolve(ctx context.Context, opts Options) (*Image, error) {
	top, raw, err := s.top(ctx)
	if err != nil {
		return nil, err
	}
	r := &resolver{st: s, want: opts.Platform, maxLayers: opts.maxLayers()}
	img, err := r.fromDescriptor(ctx, top, raw)
	if pe, ok := err.(*platformErr); ok {
		err = pe.err
	}
	if err != nil {
		return nil, err
	}
	return img, nil
}

// top fetches the manifest or index the reference names. The digest comes
// from the reference, or for a tag from a HEAD request (the registry's
// Docker-Content-Digest); the bytes are then fetched by digest (or taken
// from the cache) and checked against it.
func (s *registryStore) top(ctx context.Context) (v1.Descriptor, []byte, error) {
	what := "manifest " + s.ref.String()
	var desc v1.Descriptor
	if d, ok := s.ref.(name.Digest); ok {
		h, err := v1.NewHash(d.DigestStr())
		if err != nil {
			return desc, nil, newError(err, nil, "invalid digest in %s", s.ref)
		}
		desc.Digest = h
	} else {
		hd, err := s.client.head(ctx, s.ref.Identifier(), what)
		var te *transport.Error
		switch {
		case err == nil && hd.Digest.Hex != "":
			desc = hd
		case err != nil && (errors.Is(err, ErrNetwork) || ctx.Err() != nil || isNetError(err)):
			return desc, nil, err
		case errors.As(err, &te) && te.StatusCode == http.StatusNotFound:
			return desc, nil, s.tagNotFound(ctx, err)
		case errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden):
			return desc, nil, err
		default:
			// Some registries answer HEAD without a digest: GET by tag.
			b, mt, stated, gerr := s.client.manifest(ctx, s.ref.Identifier(), what, maxManifestSize)
			if gerr != nil {
				return desc, nil, gerr
			}
			got := sha256Of(b)
			if stated.Algorithm == "sha256" && stated != got {
				return desc, nil, &integrityError{what: what, msg: fmt.Sprintf("got %s, the registry states %s", got, stated)}
			}
			if s.cache != nil {
				s.cache.put(b)
			}
			if mt == "" {
				mt = sniffManifestType(b)
			}
			return v1.Descriptor{MediaType: mt, Digest: got, Size: int64(len(b))}, b, nil
		}
	}
	b, err := s.manifest(ctx, desc, "manifest "+desc.Digest.String()+" ("+s.ref.String()+")")
	if err != nil {
		return desc, nil, err
	}
	if desc.MediaType == "" {
		desc.MediaType = sniffManifestType(b)
	}
	desc.Size = int64(len(b))
	return desc, b, nil
}

// tagNotFound adds the tags the repository has, when it lets them be
// listed, to the error of a tag that is not there.
func (s *registryStore) tagNotFound(ctx context.Context, err error) error {
	tags := s.client.tags(ctx)
	if len(tags) == 0 {
		return err
	}
	sort.Strings(tags)
	shown := tags
	if len(shown) > 20 {
		shown = append(shown[:20:20], fmt.Sprintf("and %d more", len(tags)-20))
	}
	return newError(err, []string{fmt.Sprintf("%s has the tags: %s.", s.repo.String(), strings.Join(shown, ", "))},
		"tag %q is not in %s", s.ref.Identifier(), s.repo.String())
}

func isNetError(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &oe) || (errors.As(err, &ne) && ne.Timeout())
}

// wrap turns a registry failure into an Error with hints.
func (s *registryStore) wrap(err error, what string) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrNetwork) {
		return err
	}
	var ie *integrityError
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
			return newError(err, []string{
				fmt.Sprintf("Log in with `docker login %s` (credentials are read from $DOCKER_CONFIG/config.json, by default ~/.docker/config.json, and its credential helpers).", reg),
				"If your credentials are in another Docker config directory, set DOCKER_CONFIG to it.",
				fmt.Sprintf("Check that your account may pull %s.", repo),
			}, "%s: access to %s denied (HTTP %d)", what, repo, te.StatusCode)
		case http.StatusNotFound:
			return newError(err, []string{
				fmt.Sprintf("Check the repository name and the tag or digest in %q.", s.ref.String()),
				"If the repository is private, a missing login can look like this: `docker login " + reg + "`.",
			}, "%s: not found in %s", what, repo)
		case http.StatusTooManyRequests:
			return newError(err, []string{"The registry rate-limits pulls: wait, or log in (`docker login " + reg + "`) for a higher limit."}, "%s: rate limited by %s", what, reg)
		}
		if te.StatusCode >= 500 {
			return newError(err, []string{"The registry failed; try again later."}, "%s: registry %s error (HTTP %d)", what, reg, te.StatusCode)
		}
		return newError(err, nil, "%s: registry %s refused the request (HTTP %d)", what, reg, te.StatusCode)
	}
	plainHint := fmt.Sprintf("If %s serves plain HTTP, pass --insecure-registry %s.", reg, reg)
	insecure := IsLoopbackRegistry(reg) || isInsecure(reg, s.insecure)
	msg := err.Error()
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		h := []string{fmt.Sprintf("Check that a registry is listening at %s (host and port) and that the reference is right.", reg)}
		if !insecure {
			h = append(h, plainHint)
		}
		return newError(err, h, "%s: cannot connect to registry %s (connection refused)", what, reg)
	case strings.Contains(msg, "server gave HTTP response to HTTPS client"):
		return newError(err, []string{plainHint}, "%s: registry %s speaks plain HTTP", what, reg)
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return newError(err, []string{fmt.Sprintf("Check the registry host name %q and your network/DNS.", reg)}, "%s: cannot resolve registry host %s", what, reg)
	}
	var ce *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	if errors.As(err, &ce) || errors.As(err, &ua) || errors.As(err, &hn) || strings.Contains(msg, "x509:") {
		return newError(err, []string{
			"Install the registry's CA certificate into the system trust store (or point SSL_CERT_FILE at it).",
			plainHint,
		}, "%s: TLS certificate of %s not trusted", what, reg)
	}
	if isNetError(err) {
		h := []string{fmt.Sprintf("Check the network and that %s is reachable.", reg)}
		if !insecure {
			h = append(h, plainHint)
		}
		return newError(err, h, "%s: cannot reach registry %s", what, reg)
	}
	return newError(err, nil, "%s: registry %s", what, reg)
}
