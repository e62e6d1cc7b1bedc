//go:build linux

package guestagent

import (
	"errors"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/docker2vm/docker2vm/internal/require"
)

// memHost is a host filesystem service over an in-memory tree, answering
// the fs_request messages Gondolin's host answers (its dist/src/vfs), the
// fields as sandboxfs reads them.
type memHost struct {
	mu    sync.Mutex
	next  uint64
	nodes map[uint64]*memNode
	ops   []string
}

type memNode struct {
	mode     uint32
	data     []byte
	target   string
	children map[string]uint64
}

func newMemHost() *memHost {
	return &memHost{next: 2, nodes: map[uint64]*memNode{1: {mode: syscall.S_IFDIR | 0o755, children: map[string]uint64{}}}}
}

func (h *memHost) attr(ino uint64) map[string]any {
	n := h.nodes[ino]
	return map[string]any{"ino": ino, "mode": uint64(n.mode), "size": uint64(len(n.data) + len(n.target)), "nlink": uint64(1),
		"mtime_ms": uint64(1700000000123)}
}

func (h *memHost) entry(ino uint64) map[string]any {
	return map[string]any{"entry": map[string]any{"ino": ino, "attr": h.attr(ino)}}
}

func u(v any) uint64 { n, _ := v.(uint64); return n }

func (h *memHost) add(parent uint64, name string, n *memNode) (map[string]any, syscall.Errno) {
	dir := h.nodes[parent]
	if dir == nil || dir.children == nil {
		return nil, syscall.ENOTDIR
	}
	if _, ok := dir.children[name]; ok {
		return nil, syscall.EEXIST
	}
	ino := h.next
	h.next++
	h.nodes[ino] = n
	dir.children[name] = ino
	return h.entry(ino), 0
}

func (h *memHost) do(op string, r map[string]any) (map[string]any, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, op)
	switch op {
	case "lookup":
		dir := h.nodes[u(r["parent_ino"])]
		ino, ok := dir.children[r["name"].(string)]
		if !ok {
			return nil, syscall.ENOENT
		}
		return h.entry(ino), 0
	case "getattr":
		if h.nodes[u(r["ino"])] == nil {
			return nil, syscall.ENOENT
		}
		return map[string]any{"attr": h.attr(u(r["ino"]))}, 0
	case "readdir":
		dir := h.nodes[u(r["ino"])]
		names := make([]string, 0, len(dir.children))
		for n := range dir.children {
			names = append(names, n)
		}
		sort.Strings(names)
		var out []any
		for i := int(u(r["offset"])); i < len(names) && len(out) < int(u(r["max_entries"])); i++ {
			ino := dir.children[names[i]]
			typ := uint64(8)
			if h.nodes[ino].children != nil {
				typ = 4
			}
			out = append(out, map[string]any{"ino": ino, "name": names[i], "type": typ, "offset": uint64(i + 1)})
		}
		return map[string]any{"entries": out}, 0
	case "create":
		e, errno := h.add(u(r["parent_ino"]), r["name"].(string), &memNode{mode: syscall.S_IFREG | uint32(u(r["mode"]))&0o7777})
		if errno != 0 {
			return nil, errno
		}
		e["fh"] = e["entry"].(map[string]any)["ino"]
		return e, 0
	case "mkdir":
		return h.add(u(r["parent_ino"]), r["name"].(string), &memNode{mode: syscall.S_IFDIR | uint32(u(r["mode"]))&0o7777, children: map[string]uint64{}})
	case "symlink":
		return h.add(u(r["parent_ino"]), r["name"].(string), &memNode{mode: syscall.S_IFLNK | 0o777, target: r["target"].(string)})
	case "readlink":
		return map[string]any{"target": h.nodes[u(r["ino"])].target}, 0
	case "open":
		return map[string]any{"fh": r["ino"]}, 0
	case "read":
		n := h.nodes[u(r["fh"])]
		off := min(int(u(r["offset"])), len(n.data))
		end := min(off+int(u(r["size"])), len(n.data))
		return map[string]any{"data": append([]byte{}, n.data[off:end]...)}, 0
	case "write":
		n := h.nodes[u(r["fh"])]
		data := r["data"].([]byte)
		off := int(u(r["offset"]))
		if len(n.data) < off+len(data) {
			n.data = append(n.data, make([]byte, off+len(data)-len(n.data))...)
		}
		copy(n.data[off:], data)
		return map[string]any{"size": uint64(len(data))}, 0
	case "truncate":
		n := h.nodes[u(r["ino"])]
		size := int(u(r["size"]))
		if size <= len(n.data) {
			n.data = n.data[:size]
		} else {
			n.data = append(n.data, make([]byte, size-len(n.data))...)
		}
		return nil, 0
	case "unlink", "rmdir":
		dir := h.nodes[u(r["parent_ino"])]
		ino, ok := dir.children[r["name"].(string)]
		if !ok {
			return nil, syscall.ENOENT
		}
		if op == "rmdir" && len(h.nodes[ino].children) > 0 {
			return nil, syscall.ENOTEMPTY
		}
		delete(dir.children, r["name"].(string))
		return nil, 0
	case "rename":
		from, to := h.nodes[u(r["old_parent_ino"])], h.nodes[u(r["new_parent_ino"])]
		ino, ok := from.children[r["old_name"].(string)]
		if !ok {
			return nil, syscall.ENOENT
		}
		delete(from.children, r["old_name"].(string))
		to.children[r["new_name"].(string)] = ino
		return nil, 0
	case "release", "access":
		return nil, 0
	}
	return nil, syscall.ENOSYS
}

// serve answers requests on conn until it closes.
func (h *memHost) serve(conn net.Conn) {
	for {
		m, err := ReadMessage(conn)
		if err != nil {
			return
		}
		op, _ := m.Payload["op"].(string)
		req, _ := m.Payload["req"].(map[string]any)
		res, errno := h.do(op, req)
		p := map[string]any{"op": op, "err": uint64(errno)}
		if res != nil {
			p["res"] = res
		}
		frame, err := EncodeFrame(Message{Type: "fs_response", ID: m.ID, Payload: p})
		if err != nil {
			panic(err)
		}
		if _, err := conn.Write(frame); err != nil {
			return
		}
	}
}

// TestMountFS mounts the stand-in on a directory, served by memHost, and
// works on it through the kernel as a program in the guest would.
func TestMountFS(t *testing.T) {
	if os.Getenv("GUESTAGENT_TEST_CHILD") != t.Name() {
		require.Root(t, "to mount a FUSE filesystem in a mount namespace")
		if _, err := os.Stat("/dev/fuse"); err != nil {
			require.Missing(t, "no /dev/fuse: %v", err)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v")
		cmd.Env = append(os.Environ(), "GUESTAGENT_TEST_CHILD="+t.Name())
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("in a mount namespace: %v\n%s", err, out)
		}
		t.Logf("in a mount namespace:\n%s", out)
		return
	}
	dir := t.TempDir()
	host := newMemHost()
	guestEnd, hostEnd := net.Pipe()
	go host.serve(hostEnd)
	mounted := make(chan struct{})
	served := make(chan error, 1)
	go func() {
		served <- MountFS(dir, guestEnd, log.New(os.Stderr, "sandboxfs: ", 0), func() { close(mounted) })
	}()
	select {
	case <-mounted:
	case err := <-served:
		t.Fatalf("MountFS: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not mounted")
	}
	defer func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount: %v", err)
		}
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after the unmount")
		}
	}()

	big := strings.Repeat("0123456789abcdef", 20000) // several RPCs each way
	if err := os.WriteFile(filepath.Join(dir, "big"), []byte(big), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "big")); err != nil || string(got) != big {
		t.Fatalf("read back %d bytes, %v", len(got), err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../big", filepath.Join(dir, "a", "link")); err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(filepath.Join(dir, "a", "link")); err != nil || target != "../big" {
		t.Fatalf("readlink %q, %v", target, err)
	}
	if err := os.Rename(filepath.Join(dir, "big"), filepath.Join(dir, "a", "moved")); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(dir, "a", "moved"), 5); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "a", "moved")); string(got) != "01234" {
		t.Fatalf("after truncate: %q", got)
	}
	ents, err := os.ReadDir(filepath.Join(dir, "a"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"b", "link", "moved"}) {
		t.Fatalf("readdir %v", names)
	}
	st, err := os.Stat(filepath.Join(dir, "a", "moved"))
	if err != nil || st.Size() != 5 || st.Mode().Perm() != 0o644 || st.ModTime().UnixMilli() != 1700000000123 {
		t.Fatalf("stat %v, %v", st, err)
	}
	if err := os.Remove(filepath.Join(dir, "a")); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Fatalf("rmdir of a full directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "nothing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stat of a missing file: %v", err)
	}
	// mknod is not served: sandboxfs answers EOPNOTSUPP.
	if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644); !errors.Is(err, syscall.EOPNOTSUPP) && !errors.Is(err, syscall.ENOSYS) {
		t.Fatalf("mkfifo: %v", err)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err != nil || sfs.Bsize != 4096 {
		t.Fatalf("statfs (the host has none: defaults) %+v, %v", sfs, err)
	}
}
