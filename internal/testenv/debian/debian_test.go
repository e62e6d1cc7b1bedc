package debian

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/docker2vm/docker2vm/internal/require"
	"github.com/docker2vm/docker2vm/internal/testenv"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
)

type tarEntry struct {
	h    *tar.Header
	data []byte
}

// readTar reads every entry of an uncompressed layer, in order.
func readTar(t *testing.T, b []byte) ([]string, map[string]tarEntry) {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	var order []string
	m := map[string]tarEntry{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(h.Name, "/")
		if _, dup := m[name]; dup {
			t.Errorf("duplicate tar entry %s", name)
		}
		order = append(order, name)
		m[name] = tarEntry{h, data}
	}
	return order, m
}

func TestCapValue(t *testing.T) {
	// What `setcap cap_net_raw+ep` writes (libcap2-bin 2.66).
	want := []byte{0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	if got := CapValue(); !bytes.Equal(got, want) {
		t.Fatalf("CapValue = %x, want %x", got, want)
	}
}

func TestImage(t *testing.T) {
	require.Integration(t, "debootstraps Debian, ~200 MB of layers")
	for _, arch := range testenv.Arches {
		t.Run(arch, func(t *testing.T) { testImage(t, arch) })
	}
}

func testImage(t *testing.T, arch string) {
	start := time.Now()
	img, facts := ImageArch(t, arch, imagetest.Gzip)
	first := time.Since(start)

	// Again from the on-disk cache only, then from memory.
	mu.Lock()
	delete(memo, arch)
	for k := range images {
		if k.arch == arch {
			delete(images, k)
		}
	}
	mu.Unlock()
	start = time.Now()
	img2, facts2 := ImageArch(t, arch, imagetest.Gzip)
	disk := time.Since(start)
	start = time.Now()
	ImageArch(t, arch, imagetest.Gzip)
	mem := time.Since(start)
	t.Logf("debian.Image timings: first call %s, warm from disk %s, warm in memory %s", first.Round(time.Millisecond), disk.Round(time.Millisecond), mem.Round(time.Microsecond))

	d1, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	d2, _ := img2.Digest()
	if d1 != d2 {
		t.Errorf("image digest changed between the first and the disk-cached call: %s vs %s", d1, d2)
	}
	if !slices.Equal(facts.WhitedOut, facts2.WhitedOut) || facts.Entries != facts2.Entries || facts.SetuidPath != facts2.SetuidPath {
		t.Errorf("facts differ: %+v vs %+v", facts, facts2)
	}
	t.Logf("facts: version %s, whited out %v, opaque %s (+%s), setuid %s, cap %s=%x, %d entries",
		facts.DebianVersion, facts.WhitedOut, facts.OpaqueDir, facts.NewInOpaque, facts.SetuidPath, facts.CapPath, facts.CapValue, facts.Entries)

	// Config.
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cf.Config.Env, facts.Env) || !slices.Contains(cf.Config.Env, "DOCKER2VM_TEST=debian") || !strings.HasPrefix(cf.Config.Env[0], "PATH=") {
		t.Errorf("Env = %q, facts.Env = %q", cf.Config.Env, facts.Env)
	}
	if !slices.Equal(cf.Config.Cmd, Cmd) {
		t.Errorf("Cmd = %q", cf.Config.Cmd)
	}
	if cf.OS != "linux" || cf.Architecture != arch {
		t.Errorf("platform %s/%s", cf.OS, cf.Architecture)
	}
	mt, _ := img.MediaType()
	if mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %s", mt)
	}

	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 3 {
		t.Fatalf("%d layers", len(layers))
	}
	var tars [3][]byte
	for i, l := range layers {
		if mt, _ := l.MediaType(); mt != types.OCILayer {
			t.Errorf("layer %d media type %s", i+1, mt)
		}
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tars[i], _ = io.ReadAll(rc)
		rc.Close()
	}

	// Layer 1: the debootstrap tree.
	order1, l1 := readTar(t, tars[0])
	if !slices.IsSortedFunc(order1, walkLess) {
		t.Error("layer 1 is not in lexical walk order")
	}
	if e, ok := l1["etc/debian_version"]; !ok || strings.TrimSpace(string(e.data)) != facts.DebianVersion || !strings.HasPrefix(facts.DebianVersion, "12.") {
		t.Errorf("etc/debian_version %q, facts %q", e.data, facts.DebianVersion)
	}
	su := l1[strings.TrimPrefix(facts.SetuidPath, "/")]
	if su.h == nil || su.h.Typeflag != tar.TypeReg || su.h.Mode&0o4000 == 0 {
		t.Errorf("setuid %s: %+v", facts.SetuidPath, su.h)
	}
	if e := l1["bin"]; e.h == nil || e.h.Typeflag != tar.TypeSymlink || e.h.Linkname != "usr/bin" {
		t.Errorf("bin is not the merged-/usr symlink: %+v", e.h)
	}
	counts := map[byte]int{}
	nonRootGroup := false
	setgid := 0
	for _, n := range order1 {
		h := l1[n].h
		counts[h.Typeflag]++
		if h.Gid != 0 {
			nonRootGroup = true
		}
		if h.Mode&0o2000 != 0 && h.Typeflag == tar.TypeReg {
			setgid++
		}
		if h.Typeflag == tar.TypeLink {
			target := l1[h.Linkname]
			if target.h == nil || target.h.Typeflag != tar.TypeReg || slices.Index(order1, h.Linkname) > slices.Index(order1, n) {
				t.Errorf("hardlink %s -> %s: target not an earlier regular file", n, h.Linkname)
			}
		}
		if h.Format != tar.FormatPAX && h.Format != tar.FormatUSTAR {
			t.Errorf("%s: format %v", n, h.Format)
		}
	}
	t.Logf("layer 1: %d entries: %d dirs, %d files, %d symlinks, %d hardlinks, %d char devs, %d fifos; %d setgid files",
		len(order1), counts[tar.TypeDir], counts[tar.TypeReg], counts[tar.TypeSymlink], counts[tar.TypeLink], counts[tar.TypeChar], counts[tar.TypeFifo], setgid)
	if counts[tar.TypeLink] == 0 || counts[tar.TypeSymlink] == 0 || counts[tar.TypeChar] == 0 {
		t.Error("layer 1 lacks hardlinks, symlinks or device nodes")
	}
	if e := l1["dev/null"]; e.h == nil || e.h.Typeflag != tar.TypeChar || e.h.Devmajor != 1 || e.h.Devminor != 3 {
		t.Errorf("dev/null: %+v", e.h)
	}
	if !nonRootGroup || setgid == 0 {
		t.Error("layer 1 has no non-root group or no setgid file")
	}
	if len(facts.WhitedOut) < 2 {
		t.Fatalf("WhitedOut = %v", facts.WhitedOut)
	}
	if e := l1[strings.TrimPrefix(facts.WhitedOut[0], "/")]; e.h == nil || e.h.Typeflag != tar.TypeReg {
		t.Errorf("whited-out file %s not a file in layer 1", facts.WhitedOut[0])
	}
	if e := l1[strings.TrimPrefix(facts.WhitedOut[1], "/")]; e.h == nil || e.h.Typeflag != tar.TypeDir {
		t.Errorf("whited-out dir %s not a dir in layer 1", facts.WhitedOut[1])
	}
	opq := strings.TrimPrefix(facts.OpaqueDir, "/")
	lowerChildren := 0
	for _, n := range order1 {
		if path.Dir(n) == opq {
			lowerChildren++
		}
	}
	if lowerChildren == 0 {
		t.Errorf("opaque dir %s has no children in layer 1", opq)
	}

	// Layer 2: whiteouts, opaque marker, a changed file.
	order2, l2 := readTar(t, tars[1])
	t.Logf("layer 2: %q", order2)
	if !slices.IsSortedFunc(order2, walkLess) {
		t.Error("layer 2 is not in lexical walk order")
	}
	for _, w := range facts.WhitedOut {
		rel := strings.TrimPrefix(w, "/")
		wh := path.Join(path.Dir(rel), ".wh."+path.Base(rel))
		if e := l2[wh]; e.h == nil || e.h.Typeflag != tar.TypeReg || e.h.Size != 0 {
			t.Errorf("no whiteout %s in layer 2", wh)
		}
	}
	if e := l2[opq+"/.wh..wh..opq"]; e.h == nil {
		t.Errorf("no opaque marker in %s", opq)
	}
	if e := l2[strings.TrimPrefix(facts.NewInOpaque, "/")]; e.h == nil || len(e.data) == 0 || path.Dir(facts.NewInOpaque) != facts.OpaqueDir {
		t.Errorf("no %s in layer 2", facts.NewInOpaque)
	}
	if a, b := l1["etc/motd"], l2["etc/motd"]; a.h == nil || b.h == nil || bytes.Equal(a.data, b.data) {
		t.Error("etc/motd not changed by layer 2")
	}
	for _, n := range order2 {
		if d := path.Dir(n); d != "." && l2[d].h == nil {
			t.Errorf("layer 2: %s has no parent entry", n)
		}
	}

	// Layer 3: the file capability.
	order3, l3 := readTar(t, tars[2])
	t.Logf("layer 3: %q", order3)
	capE := l3[strings.TrimPrefix(facts.CapPath, "/")]
	if capE.h == nil {
		t.Fatalf("no %s in layer 3", facts.CapPath)
	}
	if got := capE.h.PAXRecords["SCHILY.xattr.security.capability"]; got != string(facts.CapValue) || len(got) != 20 {
		t.Errorf("security.capability = %x, want %x", got, facts.CapValue)
	}
	if magic := binary.LittleEndian.Uint32(facts.CapValue); magic != 0x02000001 {
		t.Errorf("magic_etc %#x", magic)
	}
	if capE.h.Mode != 0o755 || sha256.Sum256(capE.data) != sha256.Sum256(l1["usr/bin/ls"].data) {
		t.Errorf("%s: mode %o, not a copy of usr/bin/ls", facts.CapPath, capE.h.Mode)
	}

	// Entries: apply the layers independently of the builder.
	merged := map[string]bool{}
	for _, n := range order1 {
		merged[n] = true
	}
	for _, order := range [][]string{order2, order3} {
		for _, n := range order {
			base, dir := path.Base(n), path.Dir(n)
			switch {
			case base == ".wh..wh..opq":
				for m := range merged {
					if strings.HasPrefix(m, dir+"/") {
						delete(merged, m)
					}
				}
			case strings.HasPrefix(base, ".wh."):
				gone := path.Join(dir, strings.TrimPrefix(base, ".wh."))
				for m := range merged {
					if m == gone || strings.HasPrefix(m, gone+"/") {
						delete(merged, m)
					}
				}
			}
		}
		for _, n := range order {
			if !strings.HasPrefix(path.Base(n), ".wh.") {
				merged[n] = true
			}
		}
	}
	if len(merged) != facts.Entries || facts.Entries < 1000 {
		t.Errorf("merged tree has %d entries, facts.Entries = %d", len(merged), facts.Entries)
	}

	// Other compressions: same diff IDs, their own media types.
	for c, want := range map[imagetest.Compression]types.MediaType{imagetest.None: types.OCIUncompressedLayer, imagetest.Zstd: types.OCILayerZStd} {
		other, _ := ImageArch(t, arch, c)
		ls, err := other.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for i := range ls {
			a, _ := ls[i].DiffID()
			b, _ := layers[i].DiffID()
			mt, _ := ls[i].MediaType()
			if a != b || mt != want {
				t.Errorf("%s layer %d: diff ID %s vs %s, media type %s", c, i+1, a, b, mt)
			}
		}
		if c == imagetest.Zstd {
			rc, err := ls[0].Uncompressed()
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			io.Copy(h, rc)
			rc.Close()
			if !bytes.Equal(h.Sum(nil), func() []byte { s := sha256.Sum256(tars[0]); return s[:] }()) {
				t.Error("zstd layer 1 does not decompress to layer 1")
			}
		}
	}
}
