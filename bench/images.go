package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/docker2vm/docker2vm/internal/testenv"
	"github.com/docker2vm/docker2vm/internal/testenv/debian"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
)

// genVersion is part of every cached layout's directory name: bump it when a
// generator changes so that stale layouts are rebuilt, never reused.
const genVersion = "v1"

// refName is the org.opencontainers.image.ref.name every benchmark layout
// carries (umoci unpack --image LAYOUT:bench).
const refName = "bench"

// mtime is every generated entry's modification time.
var mtime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// benchImage is one benchmark image: an OCI layout in the cache.
type benchImage struct {
	Name string // short id: small, large, debian-gzip, debian-zstd
	Desc string
	Dir  string // the layout
	// Layers are the layer blobs (paths) and their compression, bottom first.
	Layers []layerBlob
}

type layerBlob struct {
	Path        string
	Compression string // gzip or zstd
	Size        int64
}

// layerGen writes one layer's tar entries.
type layerGen func(tw *tar.Writer) error

// buildLayout writes an OCI layout with one image made of layers, each
// compressed with comp, streaming (nothing of a layer is held in memory).
// Output is deterministic: same generators, same bytes.
func buildLayout(dir, comp string, gens []layerGen) error {
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return err
	}
	type desc struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int64  `json:"size"`
	}
	var layers []desc
	var diffIDs []string
	for i, g := range gens {
		d, diff, size, err := writeLayer(blobs, comp, g)
		if err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
		mt := "application/vnd.oci.image.layer.v1.tar+gzip"
		if comp == "zstd" {
			mt = "application/vnd.oci.image.layer.v1.tar+zstd"
		}
		layers = append(layers, desc{mt, d, size})
		diffIDs = append(diffIDs, diff)
	}
	cfg := map[string]any{
		"architecture": "amd64", "os": "linux", "created": mtime.Format(time.RFC3339),
		"config": map[string]any{"Cmd": []string{"/bin/sh"}, "Env": []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	}
	cd, cs, err := writeJSONBlob(blobs, cfg)
	if err != nil {
		return err
	}
	man := map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": desc{"application/vnd.oci.image.config.v1+json", cd, cs},
		"layers": layers,
	}
	md, ms, err := writeJSONBlob(blobs, man)
	if err != nil {
		return err
	}
	idx := map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
		"manifests": []any{map[string]any{
			"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
			"annotations": map[string]string{"org.opencontainers.image.ref.name": refName},
		}},
	}
	b, _ := json.Marshal(idx)
	if err := os.WriteFile(filepath.Join(dir, "index.json"), b, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
}

func writeJSONBlob(blobs string, v any) (string, int64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", 0, err
	}
	s := sha256.Sum256(b)
	h := hex.EncodeToString(s[:])
	return "sha256:" + h, int64(len(b)), os.WriteFile(filepath.Join(blobs, h), b, 0o644)
}

type countWriter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	c.h.Write(p)
	c.n += int64(len(p))
	return c.w.Write(p)
}

// writeLayer streams gen's tar through the compressor into a blob file.
func writeLayer(blobs, comp string, gen layerGen) (digest, diffID string, size int64, err error) {
	tmp, err := os.CreateTemp(blobs, ".tmp-")
	if err != nil {
		return "", "", 0, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	bw := bufio.NewWriterSize(tmp, 1<<20)
	cw := &countWriter{w: bw, h: sha256.New()}
	var zw io.WriteCloser
	switch comp {
	case "gzip":
		zw, err = gzip.NewWriterLevel(cw, gzip.DefaultCompression)
	case "zstd":
		zw, err = zstd.NewWriter(cw, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
	default:
		err = fmt.Errorf("unknown compression %q", comp)
	}
	if err != nil {
		return "", "", 0, err
	}
	tw2 := &countWriter{w: zw, h: sha256.New()}
	tbw := bufio.NewWriterSize(tw2, 1<<20)
	tw := tar.NewWriter(tbw)
	if err := gen(tw); err != nil {
		return "", "", 0, err
	}
	if err := tw.Close(); err != nil {
		return "", "", 0, err
	}
	if err := tbw.Flush(); err != nil {
		return "", "", 0, err
	}
	if err := zw.Close(); err != nil {
		return "", "", 0, err
	}
	if err := bw.Flush(); err != nil {
		return "", "", 0, err
	}
	if err := tmp.Close(); err != nil {
		return "", "", 0, err
	}
	h := hex.EncodeToString(cw.h.Sum(nil))
	if err := os.Rename(tmp.Name(), filepath.Join(blobs, h)); err != nil {
		return "", "", 0, err
	}
	return "sha256:" + h, "sha256:" + hex.EncodeToString(tw2.h.Sum(nil)), cw.n, nil
}

func dirHdr(name string) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX}
}

func fileHdr(name string, size int64) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: size, ModTime: mtime, Format: tar.FormatPAX}
}

// words make the small files' text compressible, like source trees are.
var words = strings.Fields(`the of and to in is that for it as with was on be by this are from or at an
which but not have has had were can all will one their there been if more when into some would other
func return struct package import error string int byte value config file path data node tree layer
image digest manifest block inode extent group journal header`)

// smallFilesGen: 100,000 files (0-6 KiB text, a few 16-64 KiB) in a deep
// tree: tree/a/ab/abc/abcd/ holds files, plus one 40-level chain.
func smallFilesGen(n int) layerGen {
	return func(tw *tar.Writer) error {
		rng := rand.New(rand.NewPCG(1, 2))
		buf := make([]byte, 0, 64<<10)
		if err := tw.WriteHeader(dirHdr("tree")); err != nil {
			return err
		}
		lastDirs := []string{}
		for i := range n {
			d := fmt.Sprintf("%05d", i/10)
			dirs := []string{"tree/" + d[:1], "tree/" + d[:1] + "/" + d[:2], "tree/" + d[:1] + "/" + d[:2] + "/" + d[:3],
				"tree/" + d[:1] + "/" + d[:2] + "/" + d[:3] + "/" + d[:4]}
			for k, dn := range dirs {
				if k < len(lastDirs) && lastDirs[k] == dn {
					continue
				}
				if err := tw.WriteHeader(dirHdr(dn)); err != nil {
					return err
				}
			}
			lastDirs = dirs
			size := rng.IntN(6 << 10)
			if rng.IntN(100) == 0 {
				size = 16<<10 + rng.IntN(48<<10)
			}
			buf = buf[:0]
			for len(buf) < size {
				buf = append(buf, words[rng.IntN(len(words))]...)
				buf = append(buf, ' ')
				if rng.IntN(12) == 0 {
					buf = append(buf, '\n')
				}
			}
			buf = buf[:size]
			if err := tw.WriteHeader(fileHdr(fmt.Sprintf("%s/f%06d.txt", dirs[3], i), int64(size))); err != nil {
				return err
			}
			if _, err := tw.Write(buf); err != nil {
				return err
			}
		}
		// a deep chain
		p := "tree/deep"
		for l := range 40 {
			if err := tw.WriteHeader(dirHdr(p)); err != nil {
				return err
			}
			if err := tw.WriteHeader(fileHdr(fmt.Sprintf("%s/level%02d", p, l), 3)); err != nil {
				return err
			}
			if _, err := tw.Write([]byte("x\n\n")); err != nil {
				return err
			}
			p += fmt.Sprintf("/d%02d", l)
		}
		return nil
	}
}

// manyFilesGen: n tiny text files (1-120 bytes) in directories of 1,000:
// many/DDD/DDD/fNNNNNNN. The count of entries, not their data, is what costs.
func manyFilesGen(n int) layerGen {
	return func(tw *tar.Writer) error {
		rng := rand.New(rand.NewPCG(3, 4))
		buf := make([]byte, 0, 256)
		if err := tw.WriteHeader(dirHdr("many")); err != nil {
			return err
		}
		for i := range n {
			if i%1000 == 0 {
				if i%1000000 == 0 {
					if err := tw.WriteHeader(dirHdr(fmt.Sprintf("many/%03d", i/1000000))); err != nil {
						return err
					}
				}
				if err := tw.WriteHeader(dirHdr(fmt.Sprintf("many/%03d/%03d", i/1000000, i/1000%1000))); err != nil {
					return err
				}
			}
			size := 1 + rng.IntN(120)
			buf = buf[:0]
			for len(buf) < size {
				buf = append(buf, words[rng.IntN(len(words))]...)
				buf = append(buf, ' ')
			}
			buf = buf[:size]
			h := fileHdr(fmt.Sprintf("many/%03d/%03d/f%07d", i/1000000, i/1000%1000, i), int64(size))
			h.Format = tar.FormatUSTAR
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			if _, err := tw.Write(buf); err != nil {
				return err
			}
		}
		return nil
	}
}

// deepFilesGen: n files of another shape than manyFilesGen's, as real
// package trees have them: names of 4-100 bytes, paths 3-12 directories
// deep in directories of 1-400 entries, sizes 0-16 KiB (most under 2 KiB),
// and among them symlinks (3%), hardlinks (1%) and files with an xattr
// (1%).
func deepFilesGen(n int) layerGen {
	return func(tw *tar.Writer) error {
		rng := rand.New(rand.NewPCG(5, 6))
		name := func(min, max int) string {
			b := make([]byte, 0, max)
			for len(b) < min+rng.IntN(max-min+1) {
				b = append(b, words[rng.IntN(len(words))]...)
				b = append(b, "-_."[rng.IntN(3)])
			}
			return string(b[:len(b)-1])
		}
		buf := make([]byte, 0, 16<<10)
		var dir []string // the current directory, as components
		var files []string
		left := 0 // entries the current directory still gets
		for i := 0; i < n; {
			if left == 0 {
				// Up a random number of levels, then down to 3-12.
				dir = dir[:rng.IntN(len(dir)+1)]
				if len(dir) == 0 {
					dir = append(dir, "pkgs")
				}
				for want := 3 + rng.IntN(10); len(dir) < want; {
					dir = append(dir, name(4, 40))
					if err := tw.WriteHeader(dirHdr(strings.Join(dir, "/"))); err != nil {
						return err
					}
					i++
				}
				left = 1 + rng.IntN(400)
				if rng.IntN(4) > 0 {
					left = 1 + rng.IntN(20)
				}
			}
			left--
			p := strings.Join(dir, "/") + "/" + fmt.Sprintf("%s%d", name(4, 100), i)
			i++
			switch k := rng.IntN(100); {
			case k < 3:
				if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: p, Linkname: "../" + name(4, 60), Mode: 0o777, ModTime: mtime, Format: tar.FormatPAX}); err != nil {
					return err
				}
				continue
			case k < 4 && len(files) > 0:
				if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeLink, Name: p, Linkname: files[rng.IntN(len(files))], Mode: 0o644, ModTime: mtime, Format: tar.FormatPAX}); err != nil {
					return err
				}
				continue
			}
			size := rng.IntN(2 << 10)
			if rng.IntN(10) == 0 {
				size = rng.IntN(16 << 10)
			}
			buf = buf[:0]
			for len(buf) < size {
				buf = append(buf, words[rng.IntN(len(words))]...)
				buf = append(buf, ' ')
			}
			buf = buf[:size]
			h := fileHdr(p, int64(size))
			if rng.IntN(100) == 0 {
				h.PAXRecords = map[string]string{"SCHILY.xattr.user.origin": name(4, 30)}
			}
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			if _, err := tw.Write(buf); err != nil {
				return err
			}
			if len(files) < 4096 {
				files = append(files, p)
			} else {
				files[rng.IntN(len(files))] = p
			}
		}
		return nil
	}
}

// nodeModulesPackages are what nodemodulesGen installs: frameworks, build
// tools and SDKs whose trees are what large Node.js images carry.
var nodeModulesPackages = []string{
	"typescript@5.6.3", "@babel/core@7.26.0", "@babel/preset-env@7.26.0", "webpack@5.96.1", "eslint@9.14.0",
	"jest@29.7.0", "react@18.3.1", "react-dom@18.3.1", "next@15.0.3", "@angular/core@19.0.0", "@angular/cli@19.0.0",
	"vue@3.5.13", "express@4.21.1", "lodash@4.17.21", "rxjs@7.8.1", "aws-sdk@2.1692.0", "@aws-sdk/client-s3@3.693.0",
	"googleapis@144.0.0", "prettier@3.3.3", "esbuild@0.24.0", "vite@5.4.11", "rollup@4.27.3", "sass@1.81.0",
	"puppeteer-core@23.8.0", "mongoose@8.8.2", "sequelize@6.37.5", "graphql@16.9.0", "@apollo/server@4.11.2",
	"moment@2.30.1", "date-fns@4.1.0", "axios@1.7.7", "@mui/material@6.1.8", "@storybook/react@8.4.5",
	"storybook@8.4.5", "@nestjs/core@10.4.8", "@nestjs/common@10.4.8", "three@0.170.0", "pdfjs-dist@4.8.69",
}

// nodemodulesGen: a real node_modules tree, installed with npm (scripts
// off) into dir once, under app/.
func nodemodulesGen(dir string) layerGen {
	return func(tw *tar.Writer) error {
		if _, err := os.Stat(filepath.Join(dir, "node_modules")); err != nil {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			os.WriteFile(filepath.Join(dir, "package.json"), []byte(`{"name":"bench-app","version":"1.0.0","private":true}`), 0o644)
			args := append([]string{"install", "--ignore-scripts", "--no-audit", "--no-fund", "--legacy-peer-deps", "--prefix", dir}, nodeModulesPackages...)
			cmd := exec.Command("npm", args...)
			cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("npm install: %w", err)
			}
		}
		if err := tw.WriteHeader(dirHdr("app")); err != nil {
			return err
		}
		return writeTree(tw, dir, "app")
	}
}

// writeTree writes the tree at dir into tw under prefix, in name order,
// with the generator's fixed times and owners.
func writeTree(tw *tar.Writer, dir, prefix string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents { // ReadDir sorts by name
		p, name := filepath.Join(dir, e.Name()), prefix+"/"+e.Name()
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.IsDir():
			if err := tw.WriteHeader(dirHdr(name)); err != nil {
				return err
			}
			if err := writeTree(tw, p, name); err != nil {
				return err
			}
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: mtime, Format: tar.FormatPAX}); err != nil {
				return err
			}
		case fi.Mode().IsRegular():
			h := fileHdr(name, fi.Size())
			h.Mode = int64(fi.Mode().Perm())
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// dataWriter writes size bytes of seeded data: random (incompressible), or
// text-like (4 bits of entropy per byte, compresses about 2:1).
func writeData(w io.Writer, seed uint64, size int64, lowEntropy bool) error {
	var s [32]byte
	s[0] = byte(seed)
	s[1] = byte(seed >> 8)
	c := rand.NewChaCha8(s)
	buf := make([]byte, 1<<20)
	for size > 0 {
		n := int(min(int64(len(buf)), size))
		c.Read(buf[:n])
		if lowEntropy {
			for i, b := range buf[:n] {
				buf[i] = 'a' + b&0x0f
			}
		}
		if _, err := w.Write(buf[:n]); err != nil {
			return err
		}
		size -= int64(n)
	}
	return nil
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// largeGens: layer 0 a 1 GiB random file; layer 1 a 1.5 GiB text-like
// file and a 4 GiB file of zeros with four 64 MiB data regions (the tar
// holds it densely, as docker and BuildKit write sparse files).
func largeGens() []layerGen {
	const gib = 1 << 30
	return []layerGen{
		func(tw *tar.Writer) error {
			if err := tw.WriteHeader(dirHdr("data")); err != nil {
				return err
			}
			if err := tw.WriteHeader(fileHdr("data/random-1g.bin", gib)); err != nil {
				return err
			}
			return writeData(tw, 1, gib, false)
		},
		func(tw *tar.Writer) error {
			if err := tw.WriteHeader(dirHdr("data")); err != nil {
				return err
			}
			if err := tw.WriteHeader(fileHdr("data/text-1.5g.txt", gib+gib/2)); err != nil {
				return err
			}
			if err := writeData(tw, 2, gib+gib/2, true); err != nil {
				return err
			}
			const size, region = 4 * gib, 64 << 20
			if err := tw.WriteHeader(fileHdr("data/sparse-4g.img", size)); err != nil {
				return err
			}
			regions := []int64{0, gib, 5 * gib / 2, size - region}
			off := int64(0)
			for i, r := range regions {
				if _, err := io.CopyN(tw, zeroReader{}, r-off); err != nil {
					return err
				}
				if err := writeData(tw, uint64(10+i), region, false); err != nil {
					return err
				}
				off = r + region
			}
			_, err := io.CopyN(tw, zeroReader{}, size-off)
			return err
		},
	}
}

// debianSplitGens: the Debian image with its first layer (the whole
// debootstrap tree, 96% of the image) cut into four layers of about equal
// uncompressed size at entry boundaries, in the tar's order (a parent comes
// before its children, a hardlink's target before the link): six layers in
// all, the shape of a real image built in steps.
func debianSplitGens(c *testenv.Console) ([]layerGen, error) {
	img, _ := debian.Image(c, imagetest.Gzip)
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	var tars [][]byte
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return nil, err
		}
		tars = append(tars, b)
	}
	// Where each entry of the first layer starts in its gzip stream
	// (approximately: the compressor's output so far), to cut it into
	// parts of about equal compressed size: equal downloads.
	type span struct{ start int64 }
	var spans []span
	cw := &countWriter{w: io.Discard, h: sha256.New()}
	zw, err := gzip.NewWriterLevel(cw, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(bytes.NewReader(tars[0]))
	tw0 := tar.NewWriter(zw)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		spans = append(spans, span{start: cw.n})
		if err := tw0.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := io.Copy(tw0, tr); err != nil {
			return nil, err
		}
	}
	tw0.Close()
	zw.Close()
	total := cw.n
	const parts = 4
	var gens []layerGen
	first := 0
	for k := 1; k <= parts; k++ {
		last := len(spans)
		if k < parts {
			last = first
			for last < len(spans) && spans[last].start < total*int64(k)/parts {
				last++
			}
		}
		from, to := first, last
		gens = append(gens, func(tw *tar.Writer) error {
			tr := tar.NewReader(bytes.NewReader(tars[0]))
			for i := 0; ; i++ {
				h, err := tr.Next()
				if err == io.EOF || i >= to {
					return nil
				}
				if err != nil {
					return err
				}
				if i < from {
					continue
				}
				if err := tw.WriteHeader(h); err != nil {
					return err
				}
				if _, err := io.Copy(tw, tr); err != nil {
					return err
				}
			}
		})
		first = last
	}
	for _, t := range tars[1:] {
		gens = append(gens, func(tw *tar.Writer) error {
			tr := tar.NewReader(bytes.NewReader(t))
			for {
				h, err := tr.Next()
				if err == io.EOF {
					return nil
				}
				if err != nil {
					return err
				}
				if err := tw.WriteHeader(h); err != nil {
					return err
				}
				if _, err := io.Copy(tw, tr); err != nil {
					return err
				}
			}
		})
	}
	return gens, nil
}

// ensureImage returns the cached layout for name, building it if needed.
func ensureImage(c *testenv.Console, cache, name string) (*benchImage, error) {
	descs := map[string]string{
		"small":       "100,000 small files (text, 0-64 KiB) in a deep tree, 1 layer, gzip",
		"large":       "1 GiB random + 1.5 GiB text + 4 GiB sparse file (4x64 MiB data), 2 layers, gzip",
		"debian-gzip": "Debian bookworm minbase, 3 layers with whiteouts, gzip",
		"debian-zstd": "Debian bookworm minbase, 3 layers with whiteouts, zstd",
		"debian6":     "Debian bookworm minbase in 6 layers (the tree cut in four, then whiteouts, a capability), gzip",
		"files1m":     "1,000,000 tiny files (1-120 bytes of text) in 1,000 directories, 1 layer, gzip",
		"deep1m":      "1,000,000 entries of another shape: names of 4-100 bytes, 3-12 levels deep, 0-16 KiB, symlinks, hardlinks, xattrs, 1 layer, gzip",
		"nodemodules": "a real node_modules tree (npm install of 38 frameworks, build tools and SDKs), 1 layer, gzip",
	}
	if descs[name] == "" {
		return nil, fmt.Errorf("unknown image %q (small, large, debian-gzip, debian-zstd, debian6, files1m, deep1m, nodemodules)", name)
	}
	dir := filepath.Join(cache, "layouts", name+"-"+genVersion)
	if _, err := os.Stat(filepath.Join(dir, "index.json")); err != nil {
		fmt.Printf("building benchmark image %s (once; cached in %s)\n", name, dir)
		start := time.Now()
		tmp := dir + ".tmp"
		os.RemoveAll(tmp)
		if err := os.MkdirAll(tmp, 0o755); err != nil {
			return nil, err
		}
		switch name {
		case "small":
			err = buildLayout(tmp, "gzip", []layerGen{smallFilesGen(100_000)})
		case "large":
			err = buildLayout(tmp, "gzip", largeGens())
		case "files1m":
			err = buildLayout(tmp, "gzip", []layerGen{manyFilesGen(1_000_000)})
		case "deep1m":
			err = buildLayout(tmp, "gzip", []layerGen{deepFilesGen(1_000_000)})
		case "nodemodules":
			err = buildLayout(tmp, "gzip", []layerGen{nodemodulesGen(filepath.Join(cache, "npm-"+genVersion))})
		case "debian6":
			var gens []layerGen
			if gens, err = debianSplitGens(c); err == nil {
				err = buildLayout(tmp, "gzip", gens)
			}
		default:
			comp := imagetest.Gzip
			if name == "debian-zstd" {
				comp = imagetest.Zstd
			}
			img, _ := debian.Image(c, comp)
			imagetest.WriteLayout(c, tmp, imagetest.LayoutEntry{Image: img, RefName: refName})
			err = nil
		}
		if err != nil {
			return nil, fmt.Errorf("building %s: %w", name, err)
		}
		os.RemoveAll(dir)
		if err := os.Rename(tmp, dir); err != nil {
			return nil, err
		}
		fmt.Printf("  built in %s\n", time.Since(start).Round(time.Second))
	}
	bi := &benchImage{Name: name, Desc: descs[name], Dir: dir}
	var idx struct {
		Manifests []struct{ Digest string } `json:"manifests"`
	}
	if err := readJSON(filepath.Join(dir, "index.json"), &idx); err != nil {
		return nil, err
	}
	if len(idx.Manifests) != 1 {
		return nil, fmt.Errorf("%s: want one manifest in index.json", dir)
	}
	var man struct {
		Layers []struct {
			MediaType, Digest string
			Size              int64
		} `json:"layers"`
	}
	if err := readJSON(blobPath(dir, idx.Manifests[0].Digest), &man); err != nil {
		return nil, err
	}
	for _, l := range man.Layers {
		comp := "gzip"
		if strings.HasSuffix(l.MediaType, "zstd") {
			comp = "zstd"
		}
		bi.Layers = append(bi.Layers, layerBlob{Path: blobPath(dir, l.Digest), Compression: comp, Size: l.Size})
	}
	return bi, nil
}

func blobPath(dir, digest string) string {
	return filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(digest, "sha256:"))
}

func readJSON(p string, v any) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
