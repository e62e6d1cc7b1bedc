package convert

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/docker2vm/docker2vm/ext4"
	"github.com/docker2vm/docker2vm/image"
	"github.com/docker2vm/docker2vm/rootfs"
)

// Output file names.
const (
	RootfsFile   = "rootfs.ext4"
	MetadataFile = metaFile
)

// Metadata is meta.json: where the rootfs came from and how to run it.
type Metadata struct {
	SchemaVersion int           `json:"schemaVersion"`
	GeneratedAt   string        `json:"generatedAt"`
	Generator     string        `json:"generator"`
	Source        SourceInfo    `json:"source"`
	SourceDigest  string        `json:"sourceDigest"`
	IndexDigest   string        `json:"indexDigest,omitempty"`
	Platform      string        `json:"platform"`
	Mode          Mode          `json:"mode"`
	Runtime       RuntimeConfig `json:"runtime"`
	Layers        []LayerInfo   `json:"layers"`
	Rootfs        RootfsInfo    `json:"rootfs"`
	// RuntimeInjection lists what was added to the image for Gondolin.
	RuntimeInjection Injection `json:"runtimeInjection"`
}

// RootfsInfo describes the written filesystem.
type RootfsInfo struct {
	File      string `json:"file"`
	SizeBytes int64  `json:"sizeBytes"`
	Entries   int64  `json:"entries"`
	DataBytes int64  `json:"dataBytes"`
	Journal   bool   `json:"journal"`
	Label     string `json:"label"`
}

// Injection records the Gondolin runtime glue added to the image tree.
type Injection struct {
	Applied             bool     `json:"applied"`
	Note                string   `json:"note,omitempty"`
	BaseRootfsPath      string   `json:"baseRootfsPath,omitempty"`
	InjectedFiles       []string `json:"injectedFiles"`
	InjectedDirectories []string `json:"injectedDirectories"`
}

// Run converts the image and publishes the output directory. On failure the
// output directory is left as it was.
func Run(ctx context.Context, opts Options) (res *Result, err error) {
	if err := validate(opts); err != nil {
		return nil, err
	}
	if opts.Mode == ModeAssets {
		return nil, &Error{Msg: "--mode assets is not available yet in this build",
			Hints: []string{"Use --mode rootfs to get rootfs.ext4 and meta.json."}}
	}
	progress := func(format string, a ...any) {
		if opts.Progress != nil {
			fmt.Fprintf(opts.Progress, format+"\n", a...)
		}
	}
	img, err := image.Resolve(ctx, opts.Source, opts.Image)
	if err != nil {
		return nil, err
	}
	defer img.Close()
	progress("resolved %s %s (%s, %d layers)", describeSource(opts.Source), img.Digest, img.Platform.String(), len(img.Layers))

	st, err := newStaging(opts.OutDir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			st.discard()
		}
	}()

	fsOpts := opts.FS
	rootfsPath := st.path(RootfsFile)
	f, err := os.OpenFile(rootfsPath, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", rootfsPath, err)
	}
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	w, err := ext4.NewWriter(f, fsOpts)
	if err != nil {
		return nil, err
	}
	m := rootfs.New(w, opts.Limits)
	for i, l := range img.Layers {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		start := time.Now()
		rc, err := img.OpenLayer(ctx, i)
		if err != nil {
			return nil, err
		}
		aerr := m.Apply(ctx, i, l.Digest.String(), rc)
		cerr := rc.Close()
		if aerr != nil {
			return nil, aerr
		}
		if cerr != nil {
			return nil, cerr
		}
		progress("applied layer %d/%d %s in %s", i+1, len(img.Layers), l.Digest, time.Since(start).Round(time.Millisecond))
	}
	if err := w.Finish(ctx, m.Tree()); err != nil {
		return nil, err
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("writing %s: %w", rootfsPath, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("writing %s: %w", rootfsPath, err)
	}
	f = nil
	stats := m.Stats()
	progress("wrote %s (%d entries, %d MiB apparent)", RootfsFile, stats.Entries, fi.Size()>>20)

	info := describe(img)
	label := fsOpts.Label
	if label == "" {
		label = "gondolin-root" // the ext4 writer's default
	}
	meta := Metadata{
		SchemaVersion: 1,
		GeneratedAt:   now(opts).UTC().Format(time.RFC3339),
		Generator:     "docker2vm",
		Source:        opts.sourceInfo(),
		SourceDigest:  info.Digest,
		IndexDigest:   info.IndexDigest,
		Platform:      info.Platform,
		Mode:          opts.Mode,
		Runtime:       info.Config,
		Layers:        info.Layers,
		Rootfs: RootfsInfo{File: RootfsFile, SizeBytes: fi.Size(), Entries: stats.Entries, DataBytes: stats.Bytes,
			Journal: !fsOpts.NoJournal, Label: label},
		RuntimeInjection: Injection{Applied: false,
			Note:          "plain image tree: Gondolin runtime glue is not injected by this build",
			InjectedFiles: []string{}, InjectedDirectories: []string{}},
	}
	if err := writeJSON(st.path(MetadataFile), meta); err != nil {
		return nil, err
	}
	files, err := listFiles(st.dir)
	if err != nil {
		return nil, err
	}
	if err := st.publish(); err != nil {
		return nil, err
	}
	progress("published %s", st.out)
	for i, name := range files {
		files[i] = filepath.Join(st.out, name)
	}
	return &Result{
		Command:      opts.Command,
		Source:       opts.sourceInfo(),
		SourceDigest: info.Digest,
		Platform:     info.Platform,
		Mode:         opts.Mode,
		OutDir:       st.out,
		RootfsPath:   filepath.Join(st.out, RootfsFile),
		MetadataPath: filepath.Join(st.out, MetadataFile),
		Files:        files,
	}, nil
}

func now(opts Options) time.Time {
	if opts.Now != nil {
		return opts.Now()
	}
	return time.Now()
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

func listFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names, nil
}
