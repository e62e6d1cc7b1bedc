package guestagent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"syscall"
)

// FS is a stand-in for Gondolin's sandboxfs: it serves the FUSE requests
// the kernel sends for the mount point (/data) by asking the host's
// filesystem service over the virtio-fs port, one RPC per request, the
// way Gondolin 0.12's sandboxfs does (its dist/guest/src/sandboxfs):
//
//	guest -> host  {v:1, t:"fs_request",  id, p:{op, req:{...}}}
//	host -> guest  {v:1, t:"fs_response", id, p:{op, err, res?:{...}}}
//
// The FUSE side is the kernel's wire protocol, read and written on
// /dev/fuse directly (fuse(4)): the stand-in needs the two dozen
// operations sandboxfs translates one by one, each a fixed struct in and
// out, and no more.
type FS struct {
	// Dev is the FUSE device: each Read returns one whole request, each
	// Write must take one whole reply.
	Dev io.ReadWriter
	// RPC is the virtio-fs port.
	RPC io.ReadWriter
	// Log receives diagnostics; nil discards them.
	Log *log.Logger

	nextID uint32
	logged map[uint32]bool
}

// FUSE operation codes (linux/fuse.h).
const (
	fuseLookup        = 1
	fuseForget        = 2
	fuseGetattr       = 3
	fuseSetattr       = 4
	fuseReadlink      = 5
	fuseSymlink       = 6
	fuseMknod         = 8
	fuseMkdir         = 9
	fuseUnlink        = 10
	fuseRmdir         = 11
	fuseRename        = 12
	fuseLink          = 13
	fuseOpen          = 14
	fuseRead          = 15
	fuseWrite         = 16
	fuseStatfs        = 17
	fuseRelease       = 18
	fuseFsync         = 20
	fuseSetxattr      = 21
	fuseGetxattr      = 22
	fuseListxattr     = 23
	fuseRemovexattr   = 24
	fuseFlush         = 25
	fuseInit          = 26
	fuseOpendir       = 27
	fuseReaddir       = 28
	fuseReleasedir    = 29
	fuseFsyncdir      = 30
	fuseAccess        = 34
	fuseCreate        = 35
	fuseInterrupt     = 36
	fuseDestroy       = 38
	fuseIoctl         = 39
	fuseBatchForget   = 42
	fuseFallocate     = 43
	fuseRename2       = 45
	fuseCopyFileRange = 47
)

const (
	// FUSEBufferSize is the least buffer a read of /dev/fuse needs: the
	// largest write (MaxRPCData) and its headers, with room to spare.
	FUSEBufferSize = 128 << 10
	// MaxRPCData is the most file data one RPC carries, sandboxfs's limit
	// (the host's frames are at most MaxFrame).
	MaxRPCData = 60 << 10
	// fuseBigWrites is FUSE_BIG_WRITES, the one INIT flag sandboxfs takes.
	fuseBigWrites = 1 << 5
	// fattrSize is FATTR_SIZE in a SETATTR request's valid mask.
	fattrSize   = 1 << 3
	inHeaderLen = 40
	// ttlMS is how long the kernel may cache an entry or attributes when
	// the host does not say.
	ttlMS = 1000
)

// fuseIn is a request: its header and the bytes after it.
type fuseIn struct {
	opcode, uid, gid uint32
	unique, nodeid   uint64
	body             []byte
}

// errFUSE is a reply that is an errno.
type errFUSE syscall.Errno

func (e errFUSE) Error() string { return syscall.Errno(e).Error() }

// Serve answers requests until the device fails or ends (the filesystem
// was unmounted); that error is returned, nil for an unmount.
func (fs *FS) Serve() error {
	buf := make([]byte, FUSEBufferSize)
	for {
		n, err := fs.Dev.Read(buf)
		if err != nil {
			if errors.Is(err, syscall.ENODEV) || err == io.EOF {
				return nil
			}
			if errors.Is(err, syscall.EINTR) || errors.Is(err, syscall.ENOENT) {
				continue // an interrupted request, gone
			}
			return fmt.Errorf("reading /dev/fuse: %w", err)
		}
		in, err := parseIn(buf[:n])
		if err != nil {
			return err
		}
		out, err := fs.handle(in)
		if in.opcode == fuseForget || in.opcode == fuseBatchForget || in.opcode == fuseInterrupt {
			continue // no reply
		}
		if err := fs.reply(in.unique, out, err); err != nil {
			return err
		}
	}
}

func parseIn(b []byte) (fuseIn, error) {
	if len(b) < inHeaderLen {
		return fuseIn{}, fmt.Errorf("a FUSE request of %d bytes, shorter than its header", len(b))
	}
	le := binary.LittleEndian
	n := le.Uint32(b[0:])
	if int(n) != len(b) {
		return fuseIn{}, fmt.Errorf("a FUSE request says %d bytes, %d came", n, len(b))
	}
	return fuseIn{opcode: le.Uint32(b[4:]), unique: le.Uint64(b[8:]), nodeid: le.Uint64(b[16:]),
		uid: le.Uint32(b[24:]), gid: le.Uint32(b[28:]), body: b[inHeaderLen:]}, nil
}

// reply writes the answer to request unique: out, or err as an errno.
func (fs *FS) reply(unique uint64, out []byte, err error) error {
	errno := int32(0)
	if err != nil {
		var e errFUSE
		if !errors.As(err, &e) {
			if fs.Log != nil {
				fs.Log.Printf("request %d: %v", unique, err)
			}
			e = errFUSE(syscall.EIO)
		}
		errno, out = -int32(e), nil
	}
	msg := make([]byte, 16, 16+len(out))
	binary.LittleEndian.PutUint32(msg[0:], uint32(16+len(out)))
	binary.LittleEndian.PutUint32(msg[4:], uint32(errno))
	binary.LittleEndian.PutUint64(msg[8:], unique)
	msg = append(msg, out...)
	if _, err := fs.Dev.Write(msg); err != nil && !errors.Is(err, syscall.ENOENT) {
		// ENOENT: the request was interrupted and is gone.
		return fmt.Errorf("writing to /dev/fuse: %w", err)
	}
	return nil
}

// fields reads the little-endian fields of a request body in order.
type fields struct {
	b   []byte
	err error
}

func (f *fields) u32() uint32 {
	if len(f.b) < 4 {
		f.err = errFUSE(syscall.EINVAL)
		return 0
	}
	v := binary.LittleEndian.Uint32(f.b)
	f.b = f.b[4:]
	return v
}

func (f *fields) u64() uint64 {
	if len(f.b) < 8 {
		f.err = errFUSE(syscall.EINVAL)
		return 0
	}
	v := binary.LittleEndian.Uint64(f.b)
	f.b = f.b[8:]
	return v
}

// name reads a NUL-terminated name.
func (f *fields) name() string {
	for i, c := range f.b {
		if c == 0 {
			s := string(f.b[:i])
			f.b = f.b[i+1:]
			return s
		}
	}
	s := string(f.b)
	f.b = nil
	return s
}

func (fs *FS) handle(in fuseIn) ([]byte, error) {
	f := &fields{b: in.body}
	var out []byte
	var err error
	switch in.opcode {
	case fuseInit:
		major, minor, readahead, flags := f.u32(), f.u32(), f.u32(), f.u32()
		if f.err != nil {
			return nil, f.err
		}
		out = le32(nil, major, minor, readahead, flags&fuseBigWrites)
		out = append(out, 0, 0, 0, 0) // max_background, congestion_threshold
		out = le32(out, MaxRPCData, 1)
		out = append(out, make([]byte, 4+4+28)...) // max_pages, map_alignment, flags2, unused
		return out, nil
	case fuseForget, fuseBatchForget, fuseInterrupt:
		return nil, nil
	case fuseDestroy, fuseFsync, fuseFsyncdir, fuseFlush, fuseReleasedir:
		return nil, nil
	case fuseOpendir:
		return le64(nil, in.nodeid, 0), nil // fh, open_flags + padding
	case fuseLookup:
		out, err = fs.entry("lookup", map[string]any{"parent_ino": in.nodeid, "name": f.name()})
	case fuseGetattr:
		out, err = fs.attr(in.nodeid)
	case fuseSetattr:
		valid := f.u32()
		f.u32()
		f.u64() // fh
		size := f.u64()
		if f.err != nil {
			return nil, f.err
		}
		if valid&fattrSize != 0 {
			if _, err := fs.call("truncate", map[string]any{"ino": in.nodeid, "size": size}); err != nil {
				return nil, err
			}
		}
		out, err = fs.attr(in.nodeid)
	case fuseReadlink:
		var res map[string]any
		if res, err = fs.call("readlink", map[string]any{"ino": in.nodeid}); err == nil {
			target, ok := res["target"].(string)
			if !ok {
				return nil, errors.New("readlink: the host's answer has no target")
			}
			out = []byte(target)
		}
	case fuseSymlink:
		name := f.name()
		out, err = fs.entry("symlink", map[string]any{"parent_ino": in.nodeid, "name": name, "target": f.name()})
	case fuseMkdir:
		mode := f.u32()
		f.u32() // umask
		out, err = fs.entry("mkdir", map[string]any{"parent_ino": in.nodeid, "name": f.name(), "mode": mode})
	case fuseUnlink, fuseRmdir:
		op := map[uint32]string{fuseUnlink: "unlink", fuseRmdir: "rmdir"}[in.opcode]
		_, err = fs.call(op, map[string]any{"parent_ino": in.nodeid, "name": f.name()})
	case fuseRename, fuseRename2:
		newdir := f.u64()
		if in.opcode == fuseRename2 {
			if flags := f.u32(); flags != 0 {
				return nil, errFUSE(syscall.EOPNOTSUPP)
			}
			f.u32()
		}
		oldName := f.name()
		_, err = fs.call("rename", map[string]any{"old_parent_ino": in.nodeid, "old_name": oldName,
			"new_parent_ino": newdir, "new_name": f.name(), "flags": uint64(0)})
	case fuseLink:
		old := f.u64()
		out, err = fs.entry("link", map[string]any{"old_ino": old, "new_parent_ino": in.nodeid, "new_name": f.name()})
	case fuseOpen:
		flags := f.u32()
		var res map[string]any
		if res, err = fs.call("open", map[string]any{"ino": in.nodeid, "flags": flags}); err == nil {
			out, err = openOut(res)
		}
	case fuseReaddir:
		out, err = fs.readdir(in.nodeid, f)
	case fuseRead:
		out, err = fs.read(f)
	case fuseWrite:
		out, err = fs.write(f)
	case fuseCreate:
		flags, mode := f.u32(), f.u32()
		f.u32() // umask
		f.u32() // open_flags
		var res map[string]any
		if res, err = fs.call("create", map[string]any{"parent_ino": in.nodeid, "name": f.name(), "mode": mode, "flags": flags}); err == nil {
			var entry, open []byte
			if entry, err = entryOut(res["entry"]); err == nil {
				if open, err = openOut(res); err == nil {
					out = append(entry, open...)
				}
			}
		}
	case fuseRelease:
		_, err = fs.call("release", map[string]any{"fh": f.u64()})
	case fuseAccess:
		mask := f.u32()
		_, err = fs.call("access", map[string]any{"ino": in.nodeid, "mask": mask, "uid": in.uid, "gid": in.gid})
	case fuseFallocate:
		fh, off, length, mode := f.u64(), f.u64(), f.u64(), f.u32()
		_, err = fs.call("fallocate", map[string]any{"fh": fh, "offset": off, "length": length, "mode": mode})
	case fuseCopyFileRange:
		fhIn, offIn := f.u64(), f.u64()
		f.u64() // nodeid_out
		fhOut, offOut, length, flags := f.u64(), f.u64(), f.u64(), f.u64()
		var res map[string]any
		if res, err = fs.call("copy_file_range", map[string]any{"fh_in": fhIn, "off_in": offIn, "fh_out": fhOut,
			"off_out": offOut, "len": length, "flags": flags}); err == nil {
			size, ok := u64Of(res["size"])
			if !ok {
				return nil, errors.New("copy_file_range: the host's answer has no size")
			}
			out = le32(nil, uint32(size), 0)
		}
	case fuseStatfs:
		out, err = fs.statfs(in.nodeid)
	case fuseMknod, fuseSetxattr, fuseGetxattr, fuseListxattr, fuseRemovexattr:
		err = fs.unsupported(in.opcode, syscall.EOPNOTSUPP)
	case fuseIoctl:
		err = fs.unsupported(in.opcode, syscall.ENOTTY)
	default:
		err = fs.unsupported(in.opcode, syscall.ENOSYS)
	}
	if f.err != nil {
		return nil, f.err
	}
	return out, err
}

func (fs *FS) unsupported(op uint32, errno syscall.Errno) error {
	if fs.logged == nil {
		fs.logged = map[uint32]bool{}
	}
	if !fs.logged[op] && fs.Log != nil {
		fs.Log.Printf("unsupported FUSE operation %d: %v", op, errno)
	}
	fs.logged[op] = true
	return errFUSE(errno)
}

// call sends one RPC and returns its result map (nil when it has none), or
// the host's errno as an errFUSE.
func (fs *FS) call(op string, req map[string]any) (map[string]any, error) {
	fs.nextID++
	if fs.nextID == 0 {
		fs.nextID = 1
	}
	id := fs.nextID
	frame, err := EncodeFrame(Message{Type: "fs_request", ID: id, Payload: map[string]any{"op": op, "req": req}})
	if err != nil {
		return nil, err
	}
	if _, err := fs.RPC.Write(frame); err != nil {
		return nil, fmt.Errorf("%s: writing to the virtio-fs port: %w", op, err)
	}
	m, err := ReadMessage(fs.RPC)
	if err != nil {
		return nil, fmt.Errorf("%s: reading from the virtio-fs port: %w", op, err)
	}
	if m.Type != "fs_response" || m.ID != id || m.Payload["op"] != op {
		return nil, fmt.Errorf("%s: the host answered %s %d (op %v) to request %d", op, m.Type, m.ID, m.Payload["op"], id)
	}
	switch e := m.Payload["err"].(type) {
	case uint64:
		if e != 0 {
			return nil, errFUSE(syscall.Errno(e))
		}
	case int64:
		if e < 0 {
			e = -e
		}
		return nil, errFUSE(syscall.Errno(e))
	default:
		return nil, fmt.Errorf("%s: the host's answer has no errno", op)
	}
	res, _ := m.Payload["res"].(map[string]any)
	return res, nil
}

// entry calls op and returns the entry it answers as fuse_entry_out.
func (fs *FS) entry(op string, req map[string]any) ([]byte, error) {
	res, err := fs.call(op, req)
	if err != nil {
		return nil, err
	}
	return entryOut(res["entry"])
}

// attr asks for ino's attributes and returns them as fuse_attr_out.
func (fs *FS) attr(ino uint64) ([]byte, error) {
	res, err := fs.call("getattr", map[string]any{"ino": ino})
	if err != nil {
		return nil, err
	}
	a, ok := res["attr"].(map[string]any)
	if !ok {
		return nil, errors.New("getattr: the host's answer has no attr")
	}
	ttl := optU64(res, "attr_ttl_ms", ttlMS)
	out := le64(nil, ttl/1000)
	out = le32(out, uint32(ttl%1000)*1e6, 0)
	return append(out, attrBytes(a, ino)...), nil
}

func (fs *FS) readdir(ino uint64, f *fields) ([]byte, error) {
	f.u64() // fh
	offset, size := f.u64(), f.u32()
	if f.err != nil {
		return nil, f.err
	}
	res, err := fs.call("readdir", map[string]any{"ino": ino, "offset": offset, "max_entries": uint64(max(1, size/256))})
	if err != nil {
		return nil, err
	}
	entries, ok := res["entries"].([]any)
	if !ok {
		return nil, errors.New("readdir: the host's answer has no entries")
	}
	var out []byte
	for _, e := range entries {
		m, ok := e.(map[string]any)
		if !ok {
			return nil, errors.New("readdir: an entry is not a map")
		}
		name, _ := m["name"].(string)
		eino, ok := u64Of(m["ino"])
		if !ok || name == "" {
			return nil, errors.New("readdir: an entry has no ino or name")
		}
		rec := le64(nil, eino, optU64(m, "offset", 0))
		rec = le32(rec, uint32(len(name)), uint32(optU64(m, "type", 0)))
		rec = append(rec, name...)
		for len(rec)%8 != 0 {
			rec = append(rec, 0)
		}
		if len(out)+len(rec) > int(size) {
			break
		}
		out = append(out, rec...)
	}
	return out, nil
}

// read fills the kernel's request whole, in RPCs of at most MaxRPCData: a
// short read before the end of the file would make the kernel cache an end
// of file there.
func (fs *FS) read(f *fields) ([]byte, error) {
	fh, offset, size := f.u64(), f.u64(), f.u32()
	if f.err != nil {
		return nil, f.err
	}
	var out []byte
	for remaining := size; remaining > 0; {
		chunk := min(remaining, MaxRPCData)
		res, err := fs.call("read", map[string]any{"fh": fh, "offset": offset, "size": chunk})
		if err != nil {
			return nil, err
		}
		data, ok := res["data"].([]byte)
		if !ok {
			return nil, errors.New("read: the host's answer has no data")
		}
		out = append(out, data...)
		if len(data) < int(chunk) {
			break
		}
		offset += uint64(len(data))
		remaining -= uint32(len(data))
	}
	return out, nil
}

func (fs *FS) write(f *fields) ([]byte, error) {
	fh, offset, size := f.u64(), f.u64(), f.u32()
	f.u32() // write_flags
	f.u64() // lock_owner
	f.u32() // flags
	f.u32() // padding
	if f.err != nil {
		return nil, f.err
	}
	data := f.b
	n := min(int(size), len(data), MaxRPCData)
	res, err := fs.call("write", map[string]any{"fh": fh, "offset": offset, "data": data[:n]})
	if err != nil {
		return nil, err
	}
	return le32(nil, uint32(optU64(res, "size", uint64(n))), 0), nil
}

func (fs *FS) statfs(ino uint64) ([]byte, error) {
	st := map[string]any{}
	res, err := fs.call("statfs", map[string]any{"ino": ino})
	switch {
	case errors.Is(err, errFUSE(syscall.ENOSYS)):
	case err != nil:
		return nil, err
	default:
		st, _ = res["statfs"].(map[string]any)
	}
	const n = 16 << 20
	out := le64(nil, optU64(st, "blocks", n), optU64(st, "bfree", n), optU64(st, "bavail", n), optU64(st, "files", n), optU64(st, "ffree", n))
	out = le32(out, uint32(optU64(st, "bsize", 4096)), uint32(optU64(st, "namelen", 255)), uint32(optU64(st, "frsize", 4096)), 0)
	return append(out, make([]byte, 24)...), nil
}

// entryOut encodes the host's entry map as fuse_entry_out.
func entryOut(v any) ([]byte, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("the host's answer has no entry")
	}
	ino, ok := u64Of(m["ino"])
	if !ok {
		return nil, errors.New("the host's entry has no ino")
	}
	a, ok := m["attr"].(map[string]any)
	if !ok {
		return nil, errors.New("the host's entry has no attr")
	}
	attrTTL, entryTTL := optU64(m, "attr_ttl_ms", ttlMS), optU64(m, "entry_ttl_ms", ttlMS)
	out := le64(nil, ino, 0, entryTTL/1000, attrTTL/1000)
	out = le32(out, uint32(entryTTL%1000)*1e6, uint32(attrTTL%1000)*1e6)
	return append(out, attrBytes(a, ino)...), nil
}

func openOut(res map[string]any) ([]byte, error) {
	fh, ok := u64Of(res["fh"])
	if !ok {
		return nil, errors.New("the host's answer has no fh")
	}
	return le32(le64(nil, fh), uint32(optU64(res, "open_flags", 0)), 0), nil
}

// attrBytes encodes the host's attr map as fuse_attr.
func attrBytes(a map[string]any, ino uint64) []byte {
	size := optU64(a, "size", 0)
	ts := func(key string) (uint64, uint32) {
		ms := optU64(a, key, 0)
		return ms / 1000, uint32(ms%1000) * 1e6
	}
	at, atn := ts("atime_ms")
	mt, mtn := ts("mtime_ms")
	ct, ctn := ts("ctime_ms")
	out := le64(nil, optU64(a, "ino", ino), size, optU64(a, "blocks", (size+511)/512), at, mt, ct)
	return le32(out, atn, mtn, ctn, uint32(optU64(a, "mode", 0)), uint32(optU64(a, "nlink", 1)),
		uint32(optU64(a, "uid", 0)), uint32(optU64(a, "gid", 0)), uint32(optU64(a, "rdev", 0)),
		uint32(optU64(a, "blksize", 4096)), 0)
}

func u64Of(v any) (uint64, bool) {
	n, ok := v.(uint64)
	return n, ok
}

func optU64(m map[string]any, key string, def uint64) uint64 {
	if n, ok := u64Of(m[key]); ok {
		return n
	}
	return def
}

func le32(b []byte, vs ...uint32) []byte {
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	return b
}

func le64(b []byte, vs ...uint64) []byte {
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b
}
