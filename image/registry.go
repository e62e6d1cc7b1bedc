package image

import (
	"context"
	"time"

	"github.com/docker2vm/docker2vm/image/internal/blob"
	"github.com/docker2vm/docker2vm/image/internal/registry"
)

// Registry settings, for the flags and environment that set them.
const (
	DefaultStallTimeout      = registry.DefaultStallTimeout
	StallTimeoutEnv          = registry.StallTimeoutEnv
	DefaultParallelDownloads = registry.DefaultParallelDownloads
	ParallelDownloadsEnv     = registry.ParallelDownloadsEnv
)

// ParseStallTimeout reads a stall timeout: a Go duration such as 90s or 5m,
// more than zero.
func ParseStallTimeout(s string) (time.Duration, error) { return registry.ParseStallTimeout(s) }

// ParseParallelDownloads reads a number of parallel downloads.
func ParseParallelDownloads(s string) (int, error) { return registry.ParseParallelDownloads(s) }

func resolveRegistry(ctx context.Context, src Source, opts Options) (*Image, error) {
	ref, err := registry.ParseReference(src.Ref, opts.InsecureRegistries)
	if err != nil {
		return nil, err
	}
	cfg := registry.Config{Ref: ref, Keychain: opts.Keychain, Insecure: opts.InsecureRegistries,
		Progress: blob.NewProgress(opts.Progress, opts.PlainProgress), StallTimeout: opts.StallTimeout,
		ParallelDownloads: opts.ParallelDownloads, Policy: opts.retry, SegmentSize: opts.segmentSize}
	if !opts.NoCache {
		cfg.CacheDir = opts.CacheDir
	}
	st, err := registry.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	top, raw, err := st.Top(ctx)
	if err == nil {
		r := &resolver{st: st, want: opts.Platform, maxLayers: opts.maxLayers()}
		var img *Image
		if img, err = r.fromDescriptor(ctx, top, raw); err == nil {
			return img, nil
		}
	}
	st.Close()
	return nil, unwrapPlatform(err)
}
