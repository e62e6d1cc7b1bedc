package guest

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/docker2vm/docker2vm/fstree"
	"github.com/docker2vm/docker2vm/gondolin"
	"github.com/docker2vm/docker2vm/internal/require"
)

// fakeELF builds a minimal little-endian ELF64 executable with an
// interpreter (if any) and DT_NEEDED entries, with the section headers
// debug/elf needs to list imported libraries.
func fakeELF(interp string, needed ...string) []byte {
	le := binary.LittleEndian
	var body bytes.Buffer // everything after the header and one phdr
	const hdrEnd = 64 + 56
	interpOff := hdrEnd
	body.WriteString(interp + "\x00")
	dynstrOff := hdrEnd + body.Len()
	dynstr := []byte{0}
	var offs []int
	for _, n := range needed {
		offs = append(offs, len(dynstr))
		dynstr = append(dynstr, n+"\x00"...)
	}
	body.Write(dynstr)
	for body.Len()%8 != 0 {
		body.WriteByte(0)
	}
	dynOff := hdrEnd + body.Len()
	for _, o := range offs {
		binary.Write(&body, le, elf.Dyn64{Tag: int64(elf.DT_NEEDED), Val: uint64(o)})
	}
	binary.Write(&body, le, elf.Dyn64{Tag: int64(elf.DT_NULL)})
	dynSize := (len(offs) + 1) * 16
	shstrOff := hdrEnd + body.Len()
	shstr := []byte("\x00.dynstr\x00.dynamic\x00.shstrtab\x00")
	body.Write(shstr)
	for body.Len()%8 != 0 {
		body.WriteByte(0)
	}
	shOff := hdrEnd + body.Len()
	sections := []elf.Section64{
		{},
		{Name: 1, Type: uint32(elf.SHT_STRTAB), Off: uint64(dynstrOff), Size: uint64(len(dynstr)), Addralign: 1},
		{Name: 9, Type: uint32(elf.SHT_DYNAMIC), Off: uint64(dynOff), Size: uint64(dynSize), Link: 1, Entsize: 16, Addralign: 8},
		{Name: 18, Type: uint32(elf.SHT_STRTAB), Off: uint64(shstrOff), Size: uint64(len(shstr)), Addralign: 1},
	}
	for _, s := range sections {
		binary.Write(&body, le, s)
	}
	var out bytes.Buffer
	h := elf.Header64{Type: uint16(elf.ET_EXEC), Machine: uint16(elf.EM_X86_64), Version: 1,
		Phoff: 64, Shoff: uint64(shOff), Ehsize: 64, Phentsize: 56, Phnum: 1, Shentsize: 64, Shnum: uint16(len(sections)), Shstrndx: 3}
	copy(h.Ident[:], elf.ELFMAG)
	h.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	h.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	h.Ident[elf.EI_VERSION] = 1
	binary.Write(&out, le, h)
	ptype := elf.PT_INTERP
	if interp == "" {
		ptype = elf.PT_NULL
	}
	binary.Write(&out, le, elf.Prog64{Type: uint32(ptype), Off: uint64(interpOff), Filesz: uint64(len(interp) + 1), Memsz: uint64(len(interp) + 1), Align: 1})
	out.Write(body.Bytes())
	return out.Bytes()
}

func TestFakeELF(t *testing.T) {
	interp, needed, err := elfDeps(fakeELF("/lib/ld-musl-x86_64.so.1", "libzstd.so.1", "libc.musl-x86_64.so.1"))
	if err != nil || interp != "/lib/ld-musl-x86_64.so.1" || strings.Join(needed, ",") != "libzstd.so.1,libc.musl-x86_64.so.1" {
		t.Fatalf("%q %q %v", interp, needed, err)
	}
	if i, n, err := elfDeps([]byte("#!/bin/sh\n")); i != "" || n != nil || err != nil {
		t.Fatal("script has deps")
	}
}

// spec describes one tree entry: "dir", "->target", or file content
// (mode 0755 unless given as "mode:content" with mode "0644").
type spec = string

// buildTree makes a tree from path -> spec; parents are created 0755.
func buildTree(t *testing.T, store fstree.Store, entries map[string]spec) *fstree.Tree {
	t.Helper()
	tr := fstree.New()
	tr.Root.Mtime = fstree.Timestamp{Sec: 1700000000}
	paths := make([]string, 0, len(entries))
	for p := range entries {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		s := entries[p]
		comps := fstree.Split(p)
		dir := tr.Root
		for _, c := range comps[:len(comps)-1] {
			n := dir.Child(c)
			if n == nil {
				n = fstree.NewDir(0o755, 0, 0)
				fstree.Link(dir, c, n, nil)
			}
			if n.Type != fstree.TypeDir {
				t.Fatalf("buildTree: %s: %s is not a dir", p, c)
			}
			dir = n
		}
		name := comps[len(comps)-1]
		var n *fstree.Inode
		switch {
		case s == "dir":
			n = fstree.NewDir(0o755, 0, 0)
		case strings.HasPrefix(s, "->"):
			n = &fstree.Inode{Type: fstree.TypeSymlink, Mode: 0o777, Target: s[2:]}
		default:
			mode := uint32(0o755)
			if strings.HasPrefix(s, "0644:") {
				mode, s = 0o644, s[5:]
			}
			c, err := store.Put(context.Background(), strings.NewReader(s), int64(len(s)))
			if err != nil {
				t.Fatal(err)
			}
			n = &fstree.Inode{Type: fstree.TypeRegular, Mode: mode, Content: c}
		}
		fstree.Link(dir, name, n, nil)
	}
	return tr
}

const baseInit = "#!/bin/sh\nset -eu\nexport PATH=/usr/sbin:/usr/bin:/sbin:/bin\nexec /usr/bin/sandboxd\n"

// alpineBase is a base rootfs shaped like Gondolin's alpine-base.
func alpineBase() map[string]spec {
	m := map[string]spec{
		"init":                               baseInit,
		"usr/bin/sandboxd":                   "sandboxd-binary",
		"usr/bin/sandboxfs":                  "sandboxfs-binary",
		"usr/bin/sandboxssh":                 "sandboxssh-binary",
		"bin/busybox":                        string(fakeELF("/lib/ld-musl-x86_64.so.1", "libc.musl-x86_64.so.1")),
		"bin/kmod":                           string(fakeELF("/lib/ld-musl-x86_64.so.1", "libzstd.so.1", "libc.musl-x86_64.so.1")),
		"sbin/modprobe":                      "->../bin/kmod",
		"lib/ld-musl-x86_64.so.1":            "musl-loader",
		"lib/libc.musl-x86_64.so.1":          "->ld-musl-x86_64.so.1",
		"usr/lib/libzstd.so.1":               "->libzstd.so.1.5.5",
		"usr/lib/libzstd.so.1.5.5":           "0644:zstd-lib",
		"usr/lib/libcrypto.so.3":             "0644:unused-lib",
		"lib/modules/6.6.1-virt/modules.dep": "0644:kernel/fs/fuse/fuse.ko:\n",
		"lib/modules/6.6.1-virt/kernel/fs/fuse/fuse.ko": "0644:fuse-module",
		"etc/alpine-release":                            "0644:3.20.0\n",
	}
	for _, a := range []string{"sh", "mount", "mkdir", "chmod", "cat", "ln", "ls", "grep", "sleep", "cp", "mknod"} {
		m["bin/"+a] = "->/bin/busybox"
	}
	for _, a := range []string{"basename", "tr", "seq", "setpriv"} {
		m["usr/bin/"+a] = "->/bin/busybox"
	}
	return m
}

func readGlueFrom(t *testing.T, base map[string]spec) (*Glue, *fstree.MemStore) {
	t.Helper()
	var bs, out fstree.MemStore
	src := TreeSource{Tree: buildTree(t, &bs, base), Store: &bs}
	g, err := ReadGlue(context.Background(), src, gondolin.ArchX86_64, &out)
	if err != nil {
		t.Fatal(err)
	}
	return g, &out
}

func TestReadGlue(t *testing.T) {
	g, _ := readGlueFrom(t, alpineBase())
	init := string(fstree.Bytes(g.Init.Content))
	if !strings.Contains(init, ". "+ImageEnvPath+"\nfi\n\nexec /usr/bin/sandboxd") {
		t.Fatalf("init not patched:\n%s", init)
	}
	if len(g.Agents) != 3 || g.Agents[SandboxingressPath] != nil {
		t.Fatalf("agents %v", slices.Sorted(maps.Keys(g.Agents)))
	}
	if g.Modules["6.6.1-virt"] == nil {
		t.Fatal("modules")
	}
	if g.Tools["sh"] != (Tool{"busybox", "/bin"}) || g.Tools["modprobe"] != (Tool{"kmod", "/sbin"}) || g.Tools["seq"].Dir != "/usr/bin" {
		t.Fatalf("tools %v", g.Tools)
	}
	if _, ok := g.Tools["setpriv"]; ok {
		t.Fatal("setpriv read: only the init's tools are needed (docker2vm-setuser switches users)")
	}
	if g.Arch != gondolin.ArchX86_64 {
		t.Fatalf("arch %q", g.Arch)
	}
	if got := strings.Join(g.Needs["busybox"], ","); got != "/lib/ld-musl-x86_64.so.1,/lib/libc.musl-x86_64.so.1" {
		t.Fatalf("busybox needs %s", got)
	}
	if got := strings.Join(g.Needs["kmod"], ","); got != "/lib/ld-musl-x86_64.so.1,/usr/lib/libzstd.so.1,/usr/lib/libzstd.so.1.5.5,/lib/libc.musl-x86_64.so.1" {
		t.Fatalf("kmod needs %s", got)
	}
	if _, ok := g.Libs["/usr/lib/libcrypto.so.3"]; ok {
		t.Fatal("unneeded lib read")
	}
	// An init already sourcing the env file is left alone.
	b := alpineBase()
	b["init"] = "#!/bin/sh\n. /etc/profile.d/gondolin-image-env.sh\nexec /usr/bin/sandboxd\n"
	g2, _ := readGlueFrom(t, b)
	if string(fstree.Bytes(g2.Init.Content)) != b["init"] {
		t.Fatal("init patched twice")
	}
}

func TestReadGlueErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(m map[string]spec)
		arch   string // default x86_64
		want   string
	}{
		{"no init", func(m map[string]spec) { delete(m, "init") }, "", "no /init"},
		{"no sandboxd", func(m map[string]spec) { delete(m, "usr/bin/sandboxd") }, "", "/usr/bin/sandboxd"},
		{"missing lib", func(m map[string]spec) { delete(m, "usr/lib/libzstd.so.1.5.5"); delete(m, "usr/lib/libzstd.so.1") }, "", "libzstd.so.1"},
		{"symlink loop", func(m map[string]spec) { m["usr/bin/sandboxfs"] = "->/usr/bin/sandboxfs" }, "", "too many levels"},
		{"unknown arch", func(m map[string]spec) {}, "riscv64", `architecture "riscv64"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := alpineBase()
			tc.mutate(m)
			arch := tc.arch
			if arch == "" {
				arch = gondolin.ArchX86_64
			}
			var bs, out fstree.MemStore
			_, err := ReadGlue(context.Background(), TreeSource{Tree: buildTree(t, &bs, m), Store: &bs}, arch, &out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// runSh runs a script with the host's /bin/sh.
func runSh(t *testing.T, script string, args ...string) (string, error) {
	t.Helper()
	if _, err := os.Stat("/bin/sh"); err != nil {
		require.Missing(t, "no /bin/sh")
	}
	p := filepath.Join(t.TempDir(), "script.sh")
	os.WriteFile(p, []byte(script), 0o755)
	cmd := exec.Command("/bin/sh", append([]string{p}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String() + errb.String(), err
}

// hugeSource claims a huge /init and fails the test if anything reads
// its data or extracts a directory to read it as a file.
type hugeSource struct {
	TreeSource
	t *testing.T
}

type mustNotRead struct{ t *testing.T }

func (m mustNotRead) Read([]byte) (int, error) {
	m.t.Error("the content of an oversized base file was read")
	return 0, io.ErrUnexpectedEOF
}

func (s hugeSource) Extract(ctx context.Context, p string, store fstree.Store) (*fstree.Inode, error) {
	if p == "/init" {
		c, err := store.Put(ctx, mustNotRead{s.t}, 1<<40)
		if err != nil {
			return nil, err
		}
		return &fstree.Inode{Type: fstree.TypeRegular, Mode: 0o755, Content: c}, nil
	}
	return s.TreeSource.Extract(ctx, p, store)
}

func TestReadGlueBounded(t *testing.T) {
	var bs, out fstree.MemStore
	src := hugeSource{TreeSource{Tree: buildTree(t, &bs, alpineBase()), Store: &bs}, t}
	_, err := ReadGlue(context.Background(), src, gondolin.ArchX86_64, &out)
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("err = %v", err)
	}
}

// TestReadGlueNeededPath: a DT_NEEDED holding a path ("../../etc/shadow")
// is refused, not resolved in the base and added to the image.
func TestReadGlueNeededPath(t *testing.T) {
	for _, tc := range []struct{ interp, needed string }{
		{"/lib/ld-musl-x86_64.so.1", "../../etc/shadow"},
		{"/lib/ld-musl-x86_64.so.1", "/etc/shadow"},
	} {
		m := alpineBase()
		m["etc/shadow"] = "0644:root:secret"
		m["bin/busybox"] = string(fakeELF(tc.interp, tc.needed))
		var bs, out fstree.MemStore
		_, err := ReadGlue(context.Background(), TreeSource{Tree: buildTree(t, &bs, m), Store: &bs}, gondolin.ArchX86_64, &out)
		if err == nil || !strings.Contains(err.Error(), "not a library name") {
			t.Errorf("%s: err = %v", tc.needed, err)
		}
	}
	// An interpreter that is a directory is refused without extracting it.
	m := alpineBase()
	m["bin/busybox"] = string(fakeELF("/etc", "libc.musl-x86_64.so.1"))
	var bs, out fstree.MemStore
	_, err := ReadGlue(context.Background(), noExtract{TreeSource{Tree: buildTree(t, &bs, m), Store: &bs}, "/etc", t}, gondolin.ArchX86_64, &out)
	if err == nil || !strings.Contains(err.Error(), "is a dir, not a file") {
		t.Errorf("interp dir: err = %v", err)
	}
}

// noExtract fails the test when path is extracted.
type noExtract struct {
	TreeSource
	path string
	t    *testing.T
}

func (s noExtract) Extract(ctx context.Context, p string, store fstree.Store) (*fstree.Inode, error) {
	if p == s.path {
		s.t.Errorf("%s extracted", p)
	}
	return s.TreeSource.Extract(ctx, p, store)
}
