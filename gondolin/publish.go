package gondolin

// Publishing guests into an image registry directory: the document
// Gondolin reads through GONDOLIN_IMAGE_REGISTRY_URL
// (builtin-image-registry.json, the registry type in download.go) and the
// archives it names (builds/<buildId>.tar.gz, see tarball.go), ready to be
// served by any static HTTP server or object store.
//
// Updates are safe against crashes and concurrent publishers: they take a
// lock in the directory (.lock), write the archive first (temporary name,
// fsync, rename) and the document last (the same), so the document only
// ever names complete archives, and a crash leaves the previous document.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/internal/diskio"
	"github.com/docker2vm/docker2vm/internal/lock"
)

// RegistryDocument is the name of the registry document in a directory,
// the one Gondolin's own registry uses.
const RegistryDocument = "builtin-image-registry.json"

// PublishOptions say where and how to publish a guest.
type PublishOptions struct {
	// Dir is the registry directory (created if missing).
	Dir string
	// Ref is the NAME:TAG the guest is published as, for its arch.
	Ref string
	// BaseURL, when set, makes archive URLs absolute (BaseURL/builds/...),
	// for archives served from somewhere else than the document; else
	// they are relative to the document.
	BaseURL string
	// Progress receives one line per step worth telling; may be nil.
	Progress func(format string, args ...any)
	// Then, when set, runs once the document names the new builds, still
	// under the registry's lock (moving the image store's refs to the same
	// builds: concurrent publishers of a tag then end with the store and
	// the document agreeing); if it fails, the document is put back.
	Then func() error
}

// Published says what Publish did.
type Published struct {
	Registry string `json:"registry"` // the document's path
	Ref      string `json:"ref"`
	Arch     string `json:"arch"`
	BuildID  string `json:"buildId"`
	Archive  string `json:"archive"` // the archive's path
	URL      string `json:"url"`     // as written in the document
	SHA256   string `json:"sha256"`
	// Reused is set when an identical, intact archive was there already.
	Reused bool `json:"reused,omitempty"`
	// Replaced is the build the ref's arch named before, when another.
	Replaced string `json:"replaced,omitempty"`
}

// Publish adds the guest in dir (an assets output: manifest.json, kernel,
// initramfs, rootfs.ext4) to the registry in o.Dir as o.Ref for the
// guest's arch, merging into the document there.
func Publish(ctx context.Context, dir string, o PublishOptions) (*Published, error) {
	ps, err := PublishAll(ctx, []string{dir}, o)
	if err != nil {
		return nil, err
	}
	return ps[0], nil
}

// PublishAll is Publish for several guests (one per architecture) at once:
// every archive is written first, then the document once, so that the
// registry names all of the new builds or none of them.
//
// Long: the steps of a publication under the registry's lock (archives, the
// document, the store's refs, the undo of each on failure) share the lock
// and what to undo.
func PublishAll(ctx context.Context, dirs []string, o PublishOptions) ([]*Published, error) {
	progress := func(format string, args ...any) {
		if o.Progress != nil {
			o.Progress(format, args...)
		}
	}
	name, tag, err := ParseImageRef(o.Ref)
	if err != nil {
		return nil, &hint.Error{Msg: "cannot publish as " + o.Ref, Err: err, Fixes: []string{"Pass --tag NAME:TAG, e.g. --tag my-agent:latest."}}
	}
	ref := name + ":" + tag
	ms := make([]*Manifest, len(dirs))
	for i, dir := range dirs {
		if ms[i], _, err = readDirManifest(dir); err != nil {
			return nil, &hint.Error{Msg: "cannot publish " + dir, Err: err, Fixes: []string{"Publish a guest converted with --mode assets."}}
		}
	}
	if o.BaseURL != "" {
		if u, err := url.Parse(o.BaseURL); err != nil || !u.IsAbs() {
			return nil, &hint.Error{Msg: fmt.Sprintf("--publish-url %q is not an absolute URL", o.BaseURL),
				Fixes: []string{"Pass the URL the registry directory is served at, e.g. https://example.com/gondolin/."}}
		}
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, &hint.Error{Msg: "cannot write the image registry " + o.Dir, Err: err,
			Fixes: []string{"Pass --publish with a writable directory."}}
	}
	l, err := lock.Acquire(ctx, filepath.Join(o.Dir, ".lock"), func() {
		progress("waiting for another docker2vm run that is publishing into %s", o.Dir)
	})
	if err != nil {
		return nil, fmt.Errorf("locking the image registry %s: %w", o.Dir, err)
	}
	defer l.Remove()

	// What killed publishers left: archives (a guest each) and documents.
	lock.Reclaim(filepath.Join(o.Dir, "builds"), ".tmp-")
	lock.Reclaim(o.Dir, "."+RegistryDocument+".tmp-")

	docPath := filepath.Join(o.Dir, RegistryDocument)
	reg, err := readRegistryDocument(docPath)
	if err != nil {
		return nil, err
	}
	oldDoc, oldErr := diskio.ReadRegular(docPath, 64<<20) // to put back should Then fail
	if err := os.MkdirAll(filepath.Join(o.Dir, "builds"), 0o755); err != nil {
		return nil, &hint.Error{Msg: "cannot write the image registry " + o.Dir, Err: err,
			Fixes: []string{"Pass --publish with a writable directory."}}
	}
	var out []*Published
	for i, dir := range dirs {
		m := ms[i]
		arch := NormalizeArch(m.Config.Arch)
		p := &Published{Registry: docPath, Ref: ref, Arch: arch, BuildID: m.BuildID,
			Archive: filepath.Join(o.Dir, "builds", m.BuildID+".tar.gz")}
		p.URL = "builds/" + m.BuildID + ".tar.gz"
		if o.BaseURL != "" {
			p.URL = strings.TrimRight(o.BaseURL, "/") + "/" + p.URL
		}
		// The archive: kept when it is the one the document vouches for,
		// else written anew (a truncated or tampered one is never trusted).
		if old, ok := reg.Builds[m.BuildID]; ok && sha256Pattern.MatchString(old.SHA256) {
			if sum, err := fileSHA256(ctx, p.Archive); err == nil && sum == old.SHA256 {
				p.SHA256, p.Reused = sum, true
			}
		}
		if !p.Reused {
			if p.SHA256, err = writeArchiveFile(ctx, p.Archive, dir, m); err != nil {
				return nil, fmt.Errorf("writing the archive of %s: %w", dir, err)
			}
			progress("wrote %s", p.Archive)
		}
		out = append(out, p)
	}

	if reg.Refs[ref] == nil {
		reg.Refs[ref] = map[string]string{}
	}
	for _, p := range out {
		for k, id := range reg.Refs[ref] {
			if NormalizeArch(k) == p.Arch {
				if id != p.BuildID {
					p.Replaced = id
				}
				delete(reg.Refs[ref], k) // one key per arch, the canonical one
			}
		}
		reg.Refs[ref][p.Arch] = p.BuildID
		reg.Builds[p.BuildID] = registryBuild{Arch: p.Arch, URL: p.URL, SHA256: p.SHA256}
		if p.Replaced != "" {
			progress("%s for %s pointed at build %s; it now points at %s", ref, p.Arch, p.Replaced, p.BuildID)
		}
	}
	b, err := json.MarshalIndent(reg, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := writeFileDurable(docPath, append(b, '\n')); err != nil {
		return nil, fmt.Errorf("writing %s: %w", docPath, err)
	}
	if o.Then != nil {
		if err := o.Then(); err != nil {
			if oldErr == nil {
				_ = writeFileDurable(docPath, oldDoc)
			} else if errors.Is(oldErr, os.ErrNotExist) {
				_ = os.Remove(docPath)
			}
			return nil, err
		}
	}
	for _, p := range out {
		progress("published %s for %s (build %s) in %s", ref, p.Arch, p.BuildID, docPath)
	}
	return out, nil
}

// readRegistryDocument reads the document at path, or an empty registry
// when there is none. Anything else than a Gondolin registry document of
// schema 1 is refused: publishing must not overwrite a file it does not
// understand.
func readRegistryDocument(path string) (*registry, error) {
	reg := &registry{Schema: 1, Refs: map[string]map[string]string{}, Builds: map[string]registryBuild{}}
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return reg, nil
	}
	if err != nil {
		return nil, err
	}
	refuse := func(why string, err error) error {
		return &hint.Error{Msg: fmt.Sprintf("%s is not a Gondolin image registry document (%s); nothing was changed", path, why), Err: err,
			Fixes: []string{"Publish into a directory of its own, or move " + path + " away."}}
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxRegistrySize {
		return nil, refuse("not a regular file of at most 4 MiB", nil)
	}
	b, err := diskio.ReadRegular(path, maxRegistrySize) // swapped since the Lstat: still never waits
	if err != nil {
		return nil, refuse("not a regular file of at most 4 MiB", err)
	}
	var raw struct {
		Schema *int                         `json:"schema"`
		Refs   map[string]map[string]string `json:"refs"`
		Builds map[string]registryBuild     `json:"builds"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, refuse("not valid JSON", err)
	}
	if raw.Schema == nil || *raw.Schema != 1 {
		return nil, refuse("its schema is not 1", nil)
	}
	if raw.Refs != nil {
		reg.Refs = raw.Refs
	}
	if raw.Builds != nil {
		reg.Builds = raw.Builds
	}
	return reg, nil
}

// writeArchiveFile writes the guest's archive to path (temporary name,
// fsync, rename) and returns its sha256.
func writeArchiveFile(ctx context.Context, path, dir string, m *Manifest) (string, error) {
	// Claimed, so that the next publisher (which holds the registry's lock
	// as this one does) knows a killed run's archive from a live one's.
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+randSuffix()+".tar.gz")
	claim, err := lock.Claim(tmp)
	if err != nil {
		return "", fmt.Errorf("claiming %s: %w", tmp, err)
	}
	defer claim.Remove()
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	defer func() {
		f.Close()
		os.Remove(f.Name()) // a no-op once renamed
	}()
	h := sha256.New()
	if err := writeGuestArchive(ctx, io.MultiWriter(f, h), dir, m); err != nil {
		return "", err
	}
	if err := f.Chmod(0o644); err != nil {
		return "", err
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), diskio.SyncDir(filepath.Dir(path))
}

// writeFileDurable replaces path with data (diskio.WriteFile, durable),
// through a claimed temporary name that a later publisher's Reclaim
// leaves alone while this one lives.
func writeFileDurable(path string, data []byte) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-"+randSuffix())
	claim, err := lock.Claim(tmp)
	if err != nil {
		return fmt.Errorf("claiming %s: %w", tmp, err)
	}
	defer claim.Remove()
	return diskio.WriteFileVia(tmp, path, data, 0o644, true)
}

func fileSHA256(ctx context.Context, path string) (string, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", path)
	}
	return HashFile(ctx, path)
}
