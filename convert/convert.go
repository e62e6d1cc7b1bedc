// Package convert is the pipeline that turns an image into a Gondolin
// guest: resolve the image, merge its layers, write rootfs.ext4 and
// meta.json, and publish the output directory atomically. Plan is the dry
// run; Run does the work. This is the public Go API for other programs.
package convert

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/docker2vm/docker2vm/ext4"
	"github.com/docker2vm/docker2vm/gondolin"
	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/image"
	"github.com/docker2vm/docker2vm/rootfs"
)

// Mode selects what the output directory holds.
type Mode string

const (
	// ModeRootfs writes rootfs.ext4 and meta.json.
	ModeRootfs Mode = "rootfs"
	// ModeAssets writes a complete Gondolin guest directory.
	ModeAssets Mode = "assets"
)

// Options configure a conversion.
type Options struct {
	Command string // the command name reported in results
	Source  image.Source
	Image   image.Options
	Mode    Mode
	OutDir  string
	Limits  rootfs.Limits
	FS      ext4.Options
	// Base says where to find the Gondolin base bundle (kernel, initramfs
	// and the runtime glue); its Platform is set from the image.
	Base gondolin.BaseOptions
	// Plain writes the image tree alone, without Gondolin's runtime glue
	// (rootfs mode only): the result does not boot in Gondolin by itself.
	Plain bool
	// RootfsMode is recorded in an assets manifest: cow, memory, readonly.
	RootfsMode gondolin.RootfsMode
	// Tag, when set, imports an assets result into Gondolin's image store
	// as NAME:TAG.
	Tag string
	// Publish, when set, adds the assets result to the Gondolin image
	// registry in this directory as Tag (see gondolin.Publish);
	// PublishURL makes the archive URLs absolute.
	Publish, PublishURL string
	// Progress receives human-facing progress lines (stderr); nil for none.
	Progress io.Writer
	// Origin, when set, is reported as the source in results and meta.json
	// instead of Source (dockerfile2gondolin converts a temporary archive
	// but the user's source is the Dockerfile).
	Origin *SourceInfo
	// Now is used for generatedAt; nil means time.Now.
	Now func() time.Time
	// Force replaces an --out directory that holds other files than an
	// earlier output's, if it is a directory of its own (see guardedPaths
	// and forceRefusal for what it never takes).
	Force bool
	// CacheMax is the size the cache directory is trimmed to after a run
	// (least recently used entries go first, never one in use): 0 means
	// cachedir.DefaultMax, a negative value no limit.
	CacheMax int64
}

// SourceInfo names where the image came from.
type SourceInfo struct {
	Kind    string `json:"kind"`
	Ref     string `json:"ref,omitempty"`
	Path    string `json:"path,omitempty"`
	Context string `json:"context,omitempty"`
}

// progressf returns a printf for progress lines (a no-op without Progress).
func (o Options) progressf() func(string, ...any) {
	return func(format string, a ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, format+"\n", a...)
		}
	}
}

func (o Options) sourceInfo() SourceInfo {
	if o.Origin != nil {
		return *o.Origin
	}
	return sourceInfo(o.Source)
}

// sourceName names the image for people and manifests: the reference, the
// layout or archive path, or for a build the Dockerfile (its archive is
// temporary, gone once the run ends).
func (o Options) sourceName() string {
	si := o.sourceInfo()
	if si.Ref != "" {
		return si.Ref
	}
	return si.Path
}

func sourceInfo(s image.Source) SourceInfo {
	if info, _ := s.Kind.Info(); info.Path {
		return SourceInfo{Kind: string(s.Kind), Path: s.Ref}
	}
	return SourceInfo{Kind: string(s.Kind), Ref: s.Ref}
}

// Step is one stage of the plan.
type Step struct {
	ID          string `json:"id"`
	Stage       string `json:"stage"`
	Description string `json:"description"`
}

// LayerInfo describes one layer of the resolved image.
type LayerInfo struct {
	Digest    string `json:"digest"`
	DiffID    string `json:"diffId,omitempty"`
	MediaType string `json:"mediaType"`
	Size      int64  `json:"size"`
}

// ImageInfo is what the resolver found.
type ImageInfo struct {
	Digest      string            `json:"digest"`
	IndexDigest string            `json:"indexDigest,omitempty"`
	Platform    string            `json:"platform"`
	Config      RuntimeConfig     `json:"config"`
	Layers      []LayerInfo       `json:"layers"`
	Labels      map[string]string `json:"labels,omitempty"`
}

// RuntimeConfig is the part of the image config a guest needs to run the
// image as its author intended.
type RuntimeConfig struct {
	Entrypoint []string `json:"entrypoint"`
	Cmd        []string `json:"cmd"`
	Env        []string `json:"env"`
	WorkingDir string   `json:"workdir"`
	User       string   `json:"user"`
}

// Plan is the dry-run result.
type Plan struct {
	Command  string     `json:"command"`
	DryRun   bool       `json:"dryRun"`
	Source   SourceInfo `json:"source"`
	Platform string     `json:"platform"`
	Mode     Mode       `json:"mode"`
	OutDir   string     `json:"outDir"`
	Image    ImageInfo  `json:"image"`
	Base     *PlanBase  `json:"base,omitempty"`
	Steps    []Step     `json:"steps"`
}

// Result is what a successful conversion reports.
type Result struct {
	Command           string     `json:"command"`
	Source            SourceInfo `json:"source"`
	SourceDigest      string     `json:"sourceDigest"`
	Platform          string     `json:"platform"`
	Mode              Mode       `json:"mode"`
	OutDir            string     `json:"outDir"`
	RootfsPath        string     `json:"rootfsPath"`
	MetadataPath      string     `json:"metadataPath"`
	AssetManifestPath string     `json:"assetManifestPath,omitempty"`
	Files             []string   `json:"files"`
	// Imported is the --tag import into Gondolin's image store.
	Imported *Imported `json:"imported,omitempty"`
	// Published is what --publish added to an image registry.
	Published *gondolin.Published `json:"published,omitempty"`
}

// Imported says where --tag put the guest.
type Imported struct {
	Tag    string `json:"tag"`
	Store  string `json:"store"`
	Object string `json:"object"`
}

func platformString(p image.Platform) string { return p.String() }

func describe(img *image.Image) ImageInfo {
	info := ImageInfo{
		Digest:   img.Digest.String(),
		Platform: platformString(img.Platform),
		Layers:   make([]LayerInfo, 0, len(img.Layers)),
	}
	if img.IndexDigest != nil {
		info.IndexDigest = img.IndexDigest.String()
	}
	if img.Config != nil {
		c := img.Config.Config
		info.Config = RuntimeConfig{Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env, WorkingDir: c.WorkingDir, User: c.User}
		info.Labels = c.Labels
	}
	for _, l := range img.Layers {
		li := LayerInfo{Digest: l.Digest.String(), MediaType: string(l.MediaType), Size: l.Size}
		if l.DiffID.Hex != "" {
			li.DiffID = l.DiffID.String()
		}
		info.Layers = append(info.Layers, li)
	}
	return info
}

func steps(opts Options, img *image.Image) []Step {
	s := []Step{
		{ID: "resolve", Stage: "source", Description: fmt.Sprintf("resolve %s for %s", describeSource(opts.Source), platformString(img.Platform))},
	}
	for i, l := range img.Layers {
		s = append(s, Step{ID: fmt.Sprintf("layer-%d", i), Stage: "merge",
			Description: fmt.Sprintf("apply %s (%s, %d bytes)", image.LayerName(i, len(img.Layers), l.Digest.String()), l.MediaType, l.Size)})
	}
	if !opts.Plain {
		s = append([]Step{s[0], {ID: "base", Stage: "source", Description: "find the Gondolin base bundle for " + platformString(img.Platform) + " and read its runtime glue"}}, s[1:]...)
		s = append(s, Step{ID: "glue", Stage: "merge", Description: "add Gondolin's init, sandbox daemons, kernel modules and missing tools without replacing image files; write the image env and entrypoint"})
	}
	s = append(s,
		Step{ID: "rootfs", Stage: "filesystem", Description: "write rootfs.ext4 from the merged tree"},
		Step{ID: "metadata", Stage: "output", Description: "write meta.json (image config, layers, source)"},
	)
	if opts.Mode == ModeAssets {
		s = append(s, Step{ID: "assets", Stage: "output", Description: "copy kernel and initramfs from the Gondolin base bundle and write manifest.json"})
	}
	s = append(s, Step{ID: "publish", Stage: "output", Description: "replace " + opts.OutDir + " atomically"})
	if opts.Tag != "" {
		s = append(s, Step{ID: "import", Stage: "output", Description: "import into Gondolin's image store as " + opts.Tag})
	}
	if opts.Publish != "" {
		s = append(s, Step{ID: "publish-registry", Stage: "output", Description: "publish into the Gondolin image registry " + opts.Publish + " as " + opts.Tag})
	}
	return s
}

func describeSource(s image.Source) string {
	if info, ok := s.Kind.Info(); ok {
		return info.Noun + " " + s.Ref
	}
	return s.String()
}

// PlanConversion resolves the image and returns what Run would do, without
// writing anything.
func PlanConversion(ctx context.Context, opts Options) (*Plan, error) {
	if err := validate(opts); err != nil {
		return nil, err
	}
	if err := checkOut(opts); err != nil {
		return nil, err
	}
	img, err := image.Resolve(ctx, opts.Source, opts.Image)
	if err != nil {
		return nil, err
	}
	defer img.Close()
	plan := &Plan{
		Command:  opts.Command,
		DryRun:   true,
		Source:   opts.sourceInfo(),
		Platform: platformString(img.Platform),
		Mode:     opts.Mode,
		OutDir:   opts.OutDir,
		Image:    describe(img),
		Steps:    steps(opts, img),
	}
	if !opts.Plain {
		if plan.Base, err = planBase(ctx, opts, platformString(img.Platform)); err != nil {
			return nil, err
		}
	}
	return plan, nil
}

// planBase says which base a run for platform would use: a local one, or
// the build it would download (looked up in Gondolin's image registry,
// not fetched). What the run would refuse (no base anywhere, a base the
// user named that does not fit, a registry without a build for the
// platform) is an error here too.
func planBase(ctx context.Context, opts Options, platform string) (*PlanBase, error) {
	bo := opts.Base
	bo.Platform = platform
	bo.ResolveOnly = true
	bo.Progress = nil
	base, err := gondolin.FindBase(ctx, bo)
	if err != nil {
		return nil, err
	}
	if base.Remote != nil {
		return &PlanBase{Download: true, Arch: base.Arch, BuildID: base.Remote.BuildID, URL: base.Remote.URL}, nil
	}
	pb := &PlanBase{Dir: base.Dir, Origin: base.Origin, Arch: base.Arch}
	if base.Manifest != nil {
		pb.BuildID = base.Manifest.BuildID
	}
	return pb, nil
}

// Check refuses, before anything is fetched or built, what a run of opts
// for plats would refuse once its image is in hand: the flags, the
// platforms, --out, and a base the user named that does not fit. A
// command that makes its image first (a Dockerfile build) calls it before
// it starts.
func Check(ctx context.Context, opts Options, plats []image.Platform) error {
	if err := validate(opts); err != nil {
		return err
	}
	if len(plats) > 1 {
		if err := checkPlatforms(plats); err != nil {
			return err
		}
	}
	if err := checkOut(opts); err != nil {
		return err
	}
	if opts.Plain {
		return nil
	}
	var errs []error
	for _, p := range plats {
		if _, err := planBase(ctx, opts, p.String()); err != nil {
			if len(plats) > 1 {
				err = fmt.Errorf("%s: %w", p.String(), err)
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// PlanBase is the Gondolin base bundle a run would use.
type PlanBase struct {
	Dir     string `json:"dir,omitempty"`
	Origin  string `json:"origin,omitempty"`
	Arch    string `json:"arch"`
	BuildID string `json:"buildId,omitempty"`
	// Download is set when no local base fits and the run would fetch one
	// (BuildID, from URL) through Gondolin's image registry.
	Download bool   `json:"download,omitempty"`
	URL      string `json:"url,omitempty"`
}

// checkOut refuses an --out that the run could not replace, before
// anything is fetched or built.
func checkOut(opts Options) error {
	abs, err := filepath.Abs(opts.OutDir)
	if err != nil {
		return fmt.Errorf("output directory %s: %w", opts.OutDir, err)
	}
	return checkReplaceable(abs, opts.Force, guardedPaths(opts))
}

func validate(opts Options) error {
	switch opts.Mode {
	case ModeRootfs, ModeAssets:
	default:
		return &hint.Error{Msg: fmt.Sprintf("Unknown mode %q.", opts.Mode), Fixes: []string{"Use --mode rootfs or --mode assets."}}
	}
	if opts.OutDir == "" {
		return &hint.Error{Msg: "An output directory is required.", Fixes: []string{"Pass --out PATH."}}
	}
	if opts.Plain && opts.Mode == ModeAssets {
		return &hint.Error{Msg: "--plain cannot be used with --mode assets",
			Fixes: []string{"A Gondolin guest needs the runtime glue: drop --plain, or use --mode rootfs."}}
	}
	if opts.Publish != "" && opts.Mode != ModeAssets {
		return &hint.Error{Msg: "--publish needs --mode assets (a registry holds whole guests)", Fixes: []string{"Add --mode assets."}}
	}
	if opts.Publish != "" && opts.Tag == "" {
		return &hint.Error{Msg: "--publish needs --tag NAME:TAG (the ref to publish the guest as)", Fixes: []string{"Add --tag NAME:TAG, e.g. --tag my-agent:latest."}}
	}
	if opts.PublishURL != "" && opts.Publish == "" {
		return &hint.Error{Msg: "--publish-url needs --publish DIR", Fixes: []string{"Add --publish DIR, or drop --publish-url."}}
	}
	if opts.Tag != "" {
		if opts.Mode != ModeAssets {
			return &hint.Error{Msg: "--tag needs --mode assets", Fixes: []string{"Add --mode assets to import the guest into Gondolin's image store."}}
		}
		if _, _, err := gondolin.ParseImageRef(opts.Tag); err != nil {
			return err
		}
	}
	return nil
}
