package gondolin

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/klauspost/compress/gzip"

	"github.com/docker2vm/docker2vm/internal/lock"
)

// sparseGuest makes a guest directory for arch whose rootfs.ext4 is a
// sparse file of size bytes with data at the given offsets (tag makes
// different guests), with a correct manifest.
func sparseGuest(t *testing.T, arch, tag string, size int64, offsets ...int64) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "guest-"+arch)
	makeBaseDir(t, dir, arch, false)
	f, err := os.Create(filepath.Join(dir, RootfsName))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for _, off := range offsets {
		if _, err := f.WriteAt([]byte(strings.Repeat(tag, 3000)), off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	sum := func(n string) string {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256(b)
		return hex.EncodeToString(s[:])
	}
	c := Checksums{Kernel: sum(KernelName), Initramfs: sum(InitramfsName), Rootfs: sum(RootfsName)}
	m := &Manifest{Version: 1, BuildID: BuildID(c, arch), Config: ManifestConfig{Arch: arch}, Assets: DefaultAssets(),
		Checksums: c, BuildTime: "2026-01-02T03:04:05.000Z"}
	if err := writeManifest(filepath.Join(dir, ManifestName), m); err != nil {
		t.Fatal(err)
	}
	return dir
}

func readDoc(t *testing.T, dir string) *registry {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, RegistryDocument))
	if err != nil {
		t.Fatal(err)
	}
	var r registry
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return &r
}

// TestPublishArchive: the archive holds the guest flat, rootfs.ext4 as a
// sparse entry that Go's reader and GNU tar both restore, and the same
// guest gives the same bytes.
func TestPublishArchive(t *testing.T) {
	ctx := context.Background()
	const size = 64<<20 + 4096
	var sums []string
	for i := range 3 {
		// The third guest ends in a hole, like every rootfs.ext4.
		guest := sparseGuest(t, ArchX86_64, "a", size, 0, 10<<20+7, size-100)
		if i == 2 {
			guest = sparseGuest(t, ArchX86_64, "a", size, 0, 10<<20+7)
		}
		reg := t.TempDir()
		p, err := Publish(ctx, guest, PublishOptions{Dir: reg, Ref: "agent:1"})
		if err != nil {
			t.Fatal(err)
		}
		sums = append(sums, p.SHA256)
		if got, _ := fileSHA256(ctx, p.Archive); got != p.SHA256 {
			t.Fatalf("archive sha256 %s, published %s", got, p.SHA256)
		}
		if fi, _ := os.Stat(p.Archive); fi.Size() > 1<<20 {
			t.Errorf("archive of %d bytes for ~20 KB of data: the zeros were stored", fi.Size())
		}
		// Go's reader understands PAX 1.0 sparse entries.
		f, _ := os.Open(p.Archive)
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(zr)
		var names []string
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			names = append(names, h.Name)
			got, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := os.ReadFile(filepath.Join(guest, h.Name))
			if !bytes.Equal(got, want) || h.Uid != 0 || h.Mode != 0o644 || h.ModTime.Year() != 2026 {
				t.Errorf("%s: %d bytes (want %d), uid %d mode %o time %v", h.Name, len(got), len(want), h.Uid, h.Mode, h.ModTime)
			}
		}
		f.Close()
		if strings.Join(names, " ") != "initramfs.cpio.lz4 manifest.json rootfs.ext4 vmlinuz-virt" {
			t.Errorf("archive entries %v", names)
		}
		// GNU tar, as Gondolin runs it: a sparse rootfs.ext4.
		if tarBin, err := exec.LookPath("tar"); err == nil {
			x := t.TempDir()
			if out, err := exec.Command(tarBin, "-xzf", p.Archive, "-C", x).CombinedOutput(); err != nil {
				t.Fatalf("tar -xzf: %v\n%s", err, out)
			}
			got, _ := os.ReadFile(filepath.Join(x, RootfsName))
			want, _ := os.ReadFile(filepath.Join(guest, RootfsName))
			if !bytes.Equal(got, want) {
				t.Error("GNU tar extracted another rootfs.ext4")
			}
			var st syscall.Stat_t
			syscall.Stat(filepath.Join(x, RootfsName), &st)
			if st.Blocks*512 > 4<<20 {
				t.Errorf("GNU tar extracted rootfs.ext4 with %d bytes allocated: not sparse", st.Blocks*512)
			}
		}
	}
	if sums[0] != sums[1] {
		t.Errorf("the same guest gave two archives: %s %s", sums[0], sums[1])
	}
	if sums[2] == sums[0] {
		t.Error("another guest gave the same archive")
	}
}

// TestPublishMerges: both arches under one ref, another ref, the same
// build again (kept), a retag (replaced and said), absolute URLs.
func TestPublishMerges(t *testing.T) {
	ctx := context.Background()
	reg := t.TempDir()
	amd := sparseGuest(t, ArchX86_64, "a", 1<<20, 0)
	arm := sparseGuest(t, ArchAarch64, "b", 1<<20, 0)
	amd2 := sparseGuest(t, ArchX86_64, "c", 1<<20, 0)
	var said strings.Builder
	o := func(ref string) PublishOptions {
		return PublishOptions{Dir: reg, Ref: ref, Progress: func(f string, a ...any) { said.WriteString(f + "\n") }}
	}
	p1, err := Publish(ctx, amd, o("agent:1"))
	if err != nil {
		t.Fatal(err)
	}
	p2, err := Publish(ctx, arm, o("agent:1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Publish(ctx, amd, o("agent:latest")); err != nil {
		t.Fatal(err)
	}
	d := readDoc(t, reg)
	if d.Schema != 1 || d.Refs["agent:1"][ArchX86_64] != p1.BuildID || d.Refs["agent:1"][ArchAarch64] != p2.BuildID ||
		d.Refs["agent:latest"][ArchX86_64] != p1.BuildID || len(d.Builds) != 2 {
		t.Fatalf("document: %+v", d)
	}
	if b := d.Builds[p2.BuildID]; b.Arch != ArchAarch64 || b.URL != "builds/"+p2.BuildID+".tar.gz" || b.SHA256 != p2.SHA256 {
		t.Errorf("build entry %+v", b)
	}
	fi1, _ := os.Stat(p1.Archive)
	again, err := Publish(ctx, amd, o("agent:1"))
	if err != nil {
		t.Fatal(err)
	}
	if fi2, _ := os.Stat(p1.Archive); !again.Reused || !fi2.ModTime().Equal(fi1.ModTime()) {
		t.Errorf("the identical build was written again (reused %v)", again.Reused)
	}
	said.Reset()
	p3, err := Publish(ctx, amd2, o("agent:1"))
	if err != nil {
		t.Fatal(err)
	}
	if p3.Replaced != p1.BuildID || !strings.Contains(said.String(), "pointed at build") {
		t.Errorf("retag: replaced %q, said %q", p3.Replaced, said.String())
	}
	if d := readDoc(t, reg); d.Refs["agent:1"][ArchX86_64] != p3.BuildID || d.Refs["agent:latest"][ArchX86_64] != p1.BuildID {
		t.Errorf("after the retag: %+v", d.Refs)
	}
	abs, err := Publish(ctx, arm, PublishOptions{Dir: reg, Ref: "agent:cdn", BaseURL: "https://cdn.example/reg/"})
	if err != nil {
		t.Fatal(err)
	}
	if abs.URL != "https://cdn.example/reg/builds/"+p2.BuildID+".tar.gz" {
		t.Errorf("url %s", abs.URL)
	}
	if ents, _ := os.ReadDir(reg); len(ents) != 2 {
		t.Errorf("registry directory holds %d entries, want the document and builds/ (no lock, no temp)", len(ents))
	}
}

// TestPublishBadInput: nothing changes when the document is not a
// Gondolin registry; a damaged archive is written again, not trusted.
func TestPublishBadInput(t *testing.T) {
	ctx := context.Background()
	guest := sparseGuest(t, ArchX86_64, "a", 1<<20, 0)
	for _, tc := range []struct{ name, doc, want string }{
		{"not json", "<html>", "not valid JSON"},
		{"schema 2", `{"schema":2,"refs":{},"builds":{}}`, "schema is not 1"},
		{"no schema", `{"refs":{}}`, "schema is not 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := t.TempDir()
			os.WriteFile(filepath.Join(reg, RegistryDocument), []byte(tc.doc), 0o644)
			_, err := Publish(ctx, guest, PublishOptions{Dir: reg, Ref: "a:1"})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "nothing was changed") {
				t.Fatalf("err = %v", err)
			}
			if b, _ := os.ReadFile(filepath.Join(reg, RegistryDocument)); string(b) != tc.doc {
				t.Error("the document changed")
			}
			if ents, _ := os.ReadDir(reg); len(ents) != 1 {
				t.Errorf("the directory holds %d entries", len(ents))
			}
		})
	}
	t.Run("damaged archive", func(t *testing.T) {
		reg := t.TempDir()
		p, err := Publish(ctx, guest, PublishOptions{Dir: reg, Ref: "a:1"})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p.Archive, 100); err != nil {
			t.Fatal(err)
		}
		q, err := Publish(ctx, guest, PublishOptions{Dir: reg, Ref: "a:1"})
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := fileSHA256(ctx, q.Archive); q.Reused || got != p.SHA256 {
			t.Errorf("damaged archive: reused %v, sha256 %s want %s", q.Reused, got, p.SHA256)
		}
	})
	t.Run("not an assets guest", func(t *testing.T) {
		if _, err := Publish(ctx, t.TempDir(), PublishOptions{Dir: t.TempDir(), Ref: "a:1"}); err == nil || !errors.Is(err, os.ErrNotExist) && !strings.Contains(err.Error(), "--mode assets") {
			t.Errorf("err = %v", err)
		}
	})
}

// TestPublishConcurrent: publishers into one directory take turns; every
// ref they wrote is in the document at the end.
func TestPublishConcurrent(t *testing.T) {
	ctx := context.Background()
	reg := t.TempDir()
	guests := []string{
		sparseGuest(t, ArchX86_64, "a", 1<<20, 0), sparseGuest(t, ArchAarch64, "b", 1<<20, 0),
		sparseGuest(t, ArchX86_64, "c", 1<<20, 0), sparseGuest(t, ArchAarch64, "d", 1<<20, 0),
	}
	errs := make(chan error, len(guests))
	for i, g := range guests {
		go func() {
			_, err := Publish(ctx, g, PublishOptions{Dir: reg, Ref: "r" + string(rune('0'+i)) + ":1"})
			errs <- err
		}()
	}
	for range guests {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if d := readDoc(t, reg); len(d.Refs) != 4 || len(d.Builds) != 4 {
		t.Errorf("document after concurrent publishes: %d refs, %d builds", len(d.Refs), len(d.Builds))
	}
}

// TestLitterReclaimed: what a killed publisher or import left (an archive,
// a registry document, a half-copied object, a ref symlink, each under its
// temporary name and claimed by nobody) is removed by the next run into
// the same directory; what a live one claims is left alone.
func TestLitterReclaimed(t *testing.T) {
	ctx := context.Background()
	guest := sparseGuest(t, ArchX86_64, "a", 1<<20, 0)
	reg, store := t.TempDir(), t.TempDir()
	litter := map[string]bool{ // path -> a directory
		filepath.Join(reg, "builds", ".tmp-dead0000.tar.gz"):             false,
		filepath.Join(reg, "."+RegistryDocument+".tmp-dead0001"):         false,
		filepath.Join(store, "objects", ".tmp-0000-dead0002"):            true,
		filepath.Join(store, "refs", "agent", "1", ArchX86_64+".tmp-d3"): false,
	}
	for p, isDir := range litter {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if isDir {
			os.MkdirAll(filepath.Join(p, "half"), 0o755)
		} else {
			os.WriteFile(p, []byte("half"), 0o644)
		}
	}
	live := filepath.Join(reg, "builds", ".tmp-live0000.tar.gz")
	claim, err := lock.Claim(live)
	if err != nil {
		t.Fatal(err)
	}
	defer claim.Remove()
	os.WriteFile(live, []byte("being written"), 0o644)

	if _, err := Publish(ctx, guest, PublishOptions{Dir: reg, Ref: "agent:1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := Import(ctx, guest, "agent:1", store); err != nil {
		t.Fatal(err)
	}
	for p := range litter {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still there: %v", p, err)
		}
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("a live publisher's archive was removed: %v", err)
	}
}

// TestSetRefsTogether: refs move for every object or for none: one that
// cannot move puts back those moved before it.
func TestSetRefsTogether(t *testing.T) {
	ctx := context.Background()
	store := t.TempDir()
	old := sparseGuest(t, ArchX86_64, "o", 1<<20, 0)
	objOld, err := Import(ctx, old, "app:1", store)
	if err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(store, "refs", "app", "1", ArchX86_64)
	before, _ := os.Readlink(link)
	objs, err := ImportObjects(ctx, []string{sparseGuest(t, ArchX86_64, "n", 1<<20, 0)}, store)
	if err != nil {
		t.Fatal(err)
	}
	if err := SetRefs(store, "app:1", append(objs, filepath.Join(store, "objects", "missing"))); err == nil {
		t.Fatal("SetRefs with a missing object succeeded")
	}
	if got, _ := os.Readlink(link); got != before {
		t.Fatalf("the ref moved to %s and stayed (was %s, object %s)", got, before, objOld)
	}
	if err := SetRefs(store, "app:1", objs); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.Readlink(link); filepath.Base(got) != filepath.Base(objs[0]) {
		t.Fatalf("the ref is %s, want %s", got, objs[0])
	}
	if _, err := os.Stat(filepath.Join(store, ".docker2vm-refs.lock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refs lock file was left: %v", err)
	}
}
