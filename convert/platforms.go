package convert

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/image"
	"github.com/docker2vm/docker2vm/internal/console"
)

// MultiResult is what a conversion for several platforms reports: one
// Result per platform, each in its own subdirectory of OutDir.
type MultiResult struct {
	Command   string     `json:"command"`
	Source    SourceInfo `json:"source"`
	Mode      Mode       `json:"mode"`
	OutDir    string     `json:"outDir"`
	Platforms []*Result  `json:"platforms"`
}

// MultiPlan is the dry run of a conversion for several platforms.
type MultiPlan struct {
	Command   string     `json:"command"`
	DryRun    bool       `json:"dryRun"`
	Source    SourceInfo `json:"source"`
	Mode      Mode       `json:"mode"`
	OutDir    string     `json:"outDir"`
	Platforms []*Plan    `json:"platforms"`
}

// PlatformDir names a platform's subdirectory in a multi-platform output:
// os_arch[_variant], as `docker buildx build --output type=local` names
// them for several platforms: arm64's default variant, v8 (which Docker
// Hub's indexes spell out), is left out, as buildx normalises it away.
func PlatformDir(p image.Platform) string {
	s := p.OS + "_" + p.Architecture
	if p.Variant != "" && !(p.Architecture == "arm64" && p.Variant == "v8") {
		s += "_" + p.Variant
	}
	return s
}

// checkPlatforms rejects an empty list and duplicates (after the
// platforms were parsed, so "arm64" and "linux/arm64/v8" are the same).
func checkPlatforms(plats []image.Platform) error {
	if len(plats) == 0 {
		return &hint.Error{Msg: "no platform given", Fixes: []string{"Pass --platform linux/amd64, linux/arm64 or both, comma-separated."}}
	}
	seen := map[string]bool{}
	for _, p := range plats {
		d := PlatformDir(image.Platform{OS: p.OS, Architecture: p.Architecture})
		if seen[d] {
			return &hint.Error{Msg: fmt.Sprintf("platform %s is given twice", image.Platform{OS: p.OS, Architecture: p.Architecture}.String()),
				Fixes: []string{"List each platform once, e.g. --platform linux/amd64,linux/arm64."}}
		}
		seen[d] = true
	}
	return nil
}

// RunPlatforms converts the image for each platform into
// OutDir/<os>_<arch>/ (see PlatformDir), each a complete output of its own
// (with --tag, each is imported under the same NAME:TAG, which Gondolin
// keeps per architecture), and publishes OutDir as a whole: every platform
// is resolved and has its base before anything is written, and on any
// failure OutDir is left as it was. Blobs that the platforms share are
// fetched once when the blob cache is on.
func RunPlatforms(ctx context.Context, opts Options, plats []image.Platform) (res *MultiResult, err error) {
	if err := validate(opts); err != nil {
		return nil, err
	}
	if err := checkPlatforms(plats); err != nil {
		return nil, err
	}
	if err := checkOut(opts); err != nil {
		return nil, err
	}
	defer startProfile()()
	progress := opts.progressf()
	var jobs []*job
	defer func() {
		for _, j := range jobs {
			j.close()
		}
	}()
	for _, p := range plats {
		o := opts
		o.Image.Platform = p
		// Every line about a platform, the image's included, says which.
		tag := "[" + p.String() + "] "
		o.Progress = console.Prefix(opts.Progress, tag)
		o.Image.Progress = console.Prefix(opts.Image.Progress, tag)
		j, err := prepare(ctx, o, o.progressf())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.String(), explainFull(err, opts))
		}
		jobs = append(jobs, j)
	}
	st, err := newStaging(ctx, opts.OutDir, opts.Force, guardedPaths(opts), progress)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			st.discard()
			err = explainFull(err, opts)
		}
	}()
	res = &MultiResult{Command: opts.Command, Source: opts.sourceInfo(), Mode: opts.Mode, OutDir: st.out}
	var after []func()
	var dirs []string
	for _, j := range jobs {
		sub, err := st.sub(PlatformDir(j.img.Platform))
		if err != nil {
			return nil, err
		}
		r, done, err := build(ctx, j, sub)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", j.img.Platform.String(), err)
		}
		res.Platforms = append(res.Platforms, r)
		after = append(after, done)
		dirs = append(dirs, sub.dir)
	}
	// The store's refs and the registry's document for every platform at
	// once, after every platform was built.
	if err := commit(ctx, opts, dirs, res.Platforms, progress); err != nil {
		return nil, err
	}
	if err := st.publish(); err != nil {
		return nil, err
	}
	progress("published %s", st.out)
	for _, f := range after {
		f()
	}
	trimCache(opts, progress)
	return res, nil
}

// PlanPlatforms is the dry run of RunPlatforms.
func PlanPlatforms(ctx context.Context, opts Options, plats []image.Platform) (*MultiPlan, error) {
	if err := validate(opts); err != nil {
		return nil, err
	}
	if err := checkPlatforms(plats); err != nil {
		return nil, err
	}
	if err := checkOut(opts); err != nil {
		return nil, err
	}
	mp := &MultiPlan{Command: opts.Command, DryRun: true, Source: opts.sourceInfo(), Mode: opts.Mode, OutDir: opts.OutDir}
	var errs []error
	for _, p := range plats {
		o := opts
		o.Image.Platform = p
		o.OutDir = strings.TrimRight(opts.OutDir, "/") + "/" + PlatformDir(p)
		plan, err := PlanConversion(ctx, o)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.String(), err))
			continue
		}
		mp.Platforms = append(mp.Platforms, plan)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return mp, nil
}
