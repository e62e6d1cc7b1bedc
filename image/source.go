package image

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/docker2vm/docker2vm/hint"
)

// SourceKind says where an image comes from.
type SourceKind string

const (
	// KindRegistry: Ref is an image reference (REGISTRY/REPO[:TAG][@DIGEST]).
	KindRegistry SourceKind = "image"
	// KindOCILayout: Ref is a directory holding an OCI image layout,
	// optionally followed by ":REFNAME" (see SplitPathRef).
	KindOCILayout SourceKind = "oci-layout"
	// KindOCIArchive: Ref is a tar file (optionally gzip- or
	// zstd-compressed) holding an OCI image layout or a `docker save`
	// archive, optionally followed by ":REFNAME" (see SplitPathRef).
	KindOCIArchive SourceKind = "oci-tar"
)

// KindInfo is what the program knows of one kind of source. Every part of
// it that differs by kind reads this table (kinds): adding a source is an
// entry here and the file that resolves it.
type KindInfo struct {
	Kind SourceKind
	// Flag is oci2gondolin's flag for the kind (without dashes), Arg the
	// placeholder of its value and Usage its line in --help.
	Flag, Arg, Usage string
	// Noun names the source in progress lines and plans ("OCI layout
	// PATH").
	Noun string
	// Path: Ref is a path (made absolute, and recorded as the source's
	// path in results), not a reference.
	Path bool
	// Pinned: a manifest digest pins what the source holds, so an earlier
	// conversion of it may be reused (the result cache).
	Pinned bool
	// Check refuses a value that cannot work, before anything runs; nil
	// accepts any.
	Check func(ref string) error

	resolve func(context.Context, Source, Options) (*Image, error)
}

// kinds is the table of source kinds, in the order --help lists them.
var kinds = []KindInfo{
	{Kind: KindRegistry, Flag: "image", Arg: "REF", Usage: "image reference in a registry", Noun: "image",
		Pinned: true, Check: checkRegistryRef, resolve: resolveRegistry},
	{Kind: KindOCILayout, Flag: "oci-layout", Arg: "PATH", Usage: "OCI image layout directory (PATH:REF selects an image)", Noun: "OCI layout",
		Path: true, Check: checkPath("oci-layout", "a directory holding index.json and oci-layout"), resolve: resolveLayout},
	{Kind: KindOCIArchive, Flag: "oci-tar", Arg: "PATH", Usage: "OCI archive or docker-save archive", Noun: "archive",
		Path: true, Check: checkPath("oci-tar", "an OCI archive or a docker save tarball"), resolve: resolveArchive},
}

// Kinds lists the kinds of source.
func Kinds() []KindInfo { return slices.Clone(kinds) }

// Info is what the table says of k.
func (k SourceKind) Info() (KindInfo, bool) {
	for _, i := range kinds {
		if i.Kind == k {
			return i, true
		}
	}
	return KindInfo{}, false
}

// checkRegistryRef refuses an empty reference, and one that holds
// credentials.
func checkRegistryRef(ref string) error {
	if strings.TrimSpace(ref) == "" {
		return &hint.Error{Msg: "--image needs a reference.", Fixes: []string{"Write --image busybox:latest or --image REGISTRY/REPO:TAG."}}
	}
	if redacted, ok := WithoutCredentials(ref); ok {
		return &hint.Error{Msg: "--image " + redacted + " holds credentials (USER:PASSWORD@ before the registry): docker2vm does not take them on the command line, where they would be echoed and kept in shell history",
			Fixes: []string{"Log in once with `docker login REGISTRY` (docker2vm reads ~/.docker/config.json and its credential helpers), then pass --image without them."}}
	}
	return nil
}

// checkPath refuses an empty path, and one that does not exist (the
// PATH of PATH:REF).
func checkPath(flag, what string) func(string) error {
	return func(ref string) error {
		if ref == "" {
			return &hint.Error{Msg: "--" + flag + " needs a path.", Fixes: []string{"Write --" + flag + " PATH (" + what + ")."}}
		}
		p, _ := SplitPathRef(ref)
		if _, err := os.Stat(p); err != nil {
			why := err.Error()
			if pe, ok := err.(*os.PathError); ok {
				why = pe.Err.Error()
			}
			return &hint.Error{Msg: "--" + flag + " " + ref + " cannot be read: " + why, Fixes: []string{"Pass the path of " + what + "."}}
		}
		return nil
	}
}

// WithoutCredentials returns ref with the user information of its
// registry part (USER[:PASSWORD]@ in the first path segment, as in a URL)
// replaced by "***@", and whether there was any. A digest's "@" comes after
// the repository, so "busybox@sha256:..." has none.
func WithoutCredentials(ref string) (string, bool) {
	scheme := ""
	if i := strings.Index(ref, "://"); i >= 0 {
		scheme, ref = ref[:i+3], ref[i+3:]
	}
	host, rest, hasSlash := strings.Cut(ref, "/")
	if !hasSlash {
		at := strings.Index(ref, "@")
		if at < 0 || digestPattern.MatchString(ref[at+1:]) {
			return scheme + ref, false
		}
		return scheme + "***@" + ref[at+1:], true
	}
	at := strings.LastIndex(host, "@")
	if at < 0 {
		return scheme + ref, false
	}
	return scheme + "***@" + host[at+1:] + "/" + rest, true
}

// digestPattern is an OCI digest (algorithm:encoded).
var digestPattern = regexp.MustCompile(`^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$`)

// Source names the image to convert, as the user gave it.
type Source struct {
	Kind SourceKind
	// Ref is the image reference for KindRegistry, and PATH[:REFNAME] for
	// layouts and archives. Options.RefName, when set, selects the image
	// inside a layout or archive instead of a ":REFNAME" suffix.
	Ref string
}

func (s Source) String() string { return string(s.Kind) + " " + s.Ref }

// SplitPathRef splits a --oci-layout/--oci-tar argument into a path and an
// optional reference name ("PATH:REF"). Paths and refs may both contain ':'
// (e.g. "dir:v1", "img.tar:example.com/app:1.0"), so: when s names an
// existing file or directory it is the path, whole; otherwise the first ':'
// whose prefix is an existing regular file or a directory holding index.json
// splits it; otherwise s is returned whole as the path (Resolve then reports
// it missing).
func SplitPathRef(s string) (path, ref string) {
	if _, err := os.Stat(s); err == nil {
		return s, ""
	}
	for i := 0; i < len(s); i++ {
		if s[i] != ':' || i == 0 || i == len(s)-1 {
			continue
		}
		p := s[:i]
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		if fi.Mode().IsRegular() {
			return p, s[i+1:]
		}
		if fi.IsDir() {
			if _, err := os.Stat(filepath.Join(p, "index.json")); err == nil {
				return p, s[i+1:]
			}
		}
	}
	return s, ""
}

// kindFlags lists the sources' flags: "--image, --oci-layout or --oci-tar".
func kindFlags(last string) string {
	var fs []string
	for _, k := range kinds {
		fs = append(fs, "--"+k.Flag)
	}
	return strings.Join(fs[:len(fs)-1], ", ") + " " + last + " " + fs[len(fs)-1]
}
