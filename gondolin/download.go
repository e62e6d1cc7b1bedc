package gondolin

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/klauspost/compress/gzip"
)

// registry is Gondolin's builtin image registry document.
type registry struct {
	Schema int                          `json:"schema"`
	Refs   map[string]map[string]string `json:"refs"`
	Builds map[string]registryBuild     `json:"builds"`
}

type registryBuild struct {
	Arch   string `json:"arch"`
	URL    string `json:"url"`
	SHA256 string `json:"sha256"`
}

const (
	maxRegistrySize    = 4 << 20
	defaultMaxDownload = 8 << 30
	maxArchiveEntries  = 64
)

func (o BaseOptions) client() *http.Client {
	if o.HTTPClient != nil {
		return o.HTTPClient
	}
	return &http.Client{}
}

func (o BaseOptions) progress(format string, args ...any) {
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, format+"\n", args...)
	}
}

// RemoteBuild is a base build Gondolin's image registry offers.
type RemoteBuild struct {
	BuildID string
	URL     string // of its .tar.gz
	SHA256  string // of the .tar.gz
}

// resolveDownload looks selector (a build id or name:tag) up for arch in
// the registry document, and checks what the download needs: a build for
// that arch, a checksum, a URL.
func resolveDownload(ctx context.Context, o BaseOptions, selector, arch string) (*RemoteBuild, error) {
	regURL := o.RegistryURL()
	reg, err := fetchRegistry(ctx, o, regURL)
	if err != nil {
		return nil, err
	}
	var buildID string
	if IsBuildID(selector) {
		buildID = selector
	} else {
		name, tag, err := ParseImageRef(selector)
		if err != nil {
			return nil, err
		}
		entries, ok := reg.Refs[name+":"+tag]
		if !ok {
			return nil, fmt.Errorf("image ref %s:%s not in the registry", name, tag)
		}
		// Keys in order, the canonical name first, so that a registry
		// listing both "x86_64" and "amd64" always gives the same build.
		avail := slices.Sorted(maps.Keys(entries))
		if v, ok := entries[arch]; ok {
			buildID = v
		} else {
			for _, k := range avail {
				if NormalizeArch(k) == arch {
					buildID = entries[k]
					break
				}
			}
		}
		if buildID == "" {
			return nil, fmt.Errorf("image ref %s:%s has no build for %s (available: %s)", name, tag, arch, strings.Join(avail, ", "))
		}
	}
	if !IsBuildID(buildID) {
		return nil, fmt.Errorf("registry build id %q is not a UUID", buildID)
	}
	build, ok := reg.Builds[buildID]
	if !ok {
		return nil, fmt.Errorf("registry has no build %s", buildID)
	}
	if build.Arch != "" && NormalizeArch(build.Arch) != arch {
		return nil, fmt.Errorf("registry build %s is for %s, not %s", buildID, build.Arch, arch)
	}
	if !sha256Pattern.MatchString(build.SHA256) {
		return nil, fmt.Errorf("registry build %s has no valid sha256; refusing an unverifiable download", buildID)
	}
	base, err := url.Parse(regURL)
	if err != nil {
		return nil, err
	}
	ref, err := url.Parse(build.URL)
	if err != nil || build.URL == "" {
		return nil, fmt.Errorf("registry build %s: bad url %q", buildID, build.URL)
	}
	return &RemoteBuild{BuildID: buildID, URL: base.ResolveReference(ref).String(), SHA256: build.SHA256}, nil
}

// download fetches selector for arch through the registry into the image
// store (objects/<buildId>/ plus the ref symlink) and loads it.
func download(ctx context.Context, o BaseOptions, store, selector, arch string) (*Base, error) {
	rb, err := resolveDownload(ctx, o, selector, arch)
	if err != nil {
		return nil, err
	}
	buildID, archiveURL := rb.BuildID, rb.URL
	var name, tag string
	if !IsBuildID(selector) {
		if name, tag, err = ParseImageRef(selector); err != nil {
			return nil, err
		}
	}

	objects := filepath.Join(store, "objects")
	objectDir := filepath.Join(objects, buildID)
	if _, err := os.Stat(objectDir); err != nil {
		if err := os.MkdirAll(objects, 0o755); err != nil {
			return nil, err
		}
		tmp := filepath.Join(objects, ".tmp-"+buildID+"-"+randSuffix())
		if err := os.Mkdir(tmp, 0o755); err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp) // a no-op once renamed
		o.progress("downloading Gondolin base %s (%s) from %s", selector, arch, archiveURL)
		if err := fetchArchive(ctx, o, archiveURL, rb.SHA256, tmp); err != nil {
			return nil, err
		}
		m, err := ReadManifest(filepath.Join(tmp, ManifestName))
		if err != nil {
			return nil, fmt.Errorf("downloaded archive: %w", err)
		}
		if m.BuildID != buildID {
			return nil, fmt.Errorf("downloaded image buildId mismatch: expected %s, got %s (%s)", buildID, m.BuildID, archiveURL)
		}
		if NormalizeArch(m.Config.Arch) != arch {
			return nil, fmt.Errorf("downloaded image arch mismatch: expected %s, got %s (%s)", arch, m.Config.Arch, archiveURL)
		}
		if _, err := loadBase(tmp, "download", arch, ""); err != nil {
			return nil, fmt.Errorf("downloaded archive: %w", err)
		}
		if err := os.Rename(tmp, objectDir); err != nil && !errors.Is(err, os.ErrExist) && !errors.Is(err, syscall.ENOTEMPTY) {
			return nil, err
		}
	}
	b, err := loadBase(objectDir, "download "+selector, arch, "")
	if err != nil {
		return nil, err
	}
	if name != "" {
		if err := writeRef(store, name, tag, arch, objectDir); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func httpGet(ctx context.Context, o BaseOptions, u, agent string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", agent)
	resp, err := o.client().Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return resp, nil
}

func fetchRegistry(ctx context.Context, o BaseOptions, u string) (*registry, error) {
	resp, err := httpGet(ctx, o, u, "docker2vm-gondolin-image-registry")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxRegistrySize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxRegistrySize {
		return nil, fmt.Errorf("registry %s is larger than %d bytes", u, maxRegistrySize)
	}
	var r registry
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("registry %s: not valid JSON: %w", u, err)
	}
	if r.Schema != 1 {
		return nil, fmt.Errorf("registry %s: schema %d, want 1", u, r.Schema)
	}
	return &r, nil
}

// fetchArchive streams a .tar.gz into dir, hashing the compressed bytes as
// they arrive; the hash is checked once the whole body has been read. Only
// flat regular files are accepted (no '/', no "..", no links, devices or
// directories other than "." itself), each and all within the size limit.
// On error dir may hold partial files; the caller removes it.
func fetchArchive(ctx context.Context, o BaseOptions, u, wantSHA string, dir string) error {
	limit := o.MaxDownload
	if limit <= 0 {
		limit = defaultMaxDownload
	}
	resp, err := httpGet(ctx, o, u, "docker2vm-gondolin-image-fetch")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	h := sha256.New()
	body := io.TeeReader(&limitedReader{r: resp.Body, n: limit, what: "archive"}, h)
	zr, err := gzip.NewReader(body)
	if err != nil {
		return fmt.Errorf("%s: not gzip: %w", u, err)
	}
	if err := extractFlat(ctx, tar.NewReader(zr), dir, limit); err != nil {
		return fmt.Errorf("%s: %w", u, err)
	}
	// Hash everything, including gzip trailer and padding after the tar.
	if _, err := io.Copy(io.Discard, body); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != wantSHA {
		return fmt.Errorf("downloaded archive checksum mismatch for %s: expected %s, got %s", u, wantSHA, got)
	}
	return nil
}

type limitedReader struct {
	r    io.Reader
	n    int64
	what string
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, fmt.Errorf("%s exceeds the size limit", l.what)
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

func extractFlat(ctx context.Context, tr *tar.Reader, dir string, limit int64) error {
	seen := map[string]bool{}
	var total int64
	for count := 0; ; count++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading archive: %w", err)
		}
		if count >= maxArchiveEntries {
			return fmt.Errorf("archive has more than %d entries", maxArchiveEntries)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue // pax global header (git archive, some tars): metadata only
		}
		name := strings.TrimPrefix(hdr.Name, "./")
		if hdr.Typeflag == tar.TypeDir && (name == "" || name == "." || name == "./") {
			continue
		}
		if name == "" || strings.ContainsAny(name, "/\\") || name == "." || name == ".." || strings.ContainsRune(name, 0) {
			return fmt.Errorf("archive entry %q is not a flat file name", hdr.Name)
		}
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		default:
			return fmt.Errorf("archive entry %q is not a regular file (type %q)", hdr.Name, hdr.Typeflag)
		}
		if seen[name] {
			return fmt.Errorf("archive entry %q appears twice", hdr.Name)
		}
		seen[name] = true
		if hdr.Size < 0 || hdr.Size > limit || total+hdr.Size > limit {
			return fmt.Errorf("archive entry %q (%d bytes) exceeds the size limit", hdr.Name, hdr.Size)
		}
		total += hdr.Size
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		_, err = io.CopyBuffer(f, ctxReader{ctx, io.LimitReader(tr, hdr.Size)}, make([]byte, 1<<20))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("extracting %q: %w", hdr.Name, err)
		}
	}
}
