// Package testtar builds layer tars in memory for tests: the one builder
// every package's tests use (it imports only the standard library, so
// rootfs's and ext4's tests can use it as well as the image builders of
// internal/testenv/imagetest).
//
// Entries are values: a constructor makes the common kinds with the usual
// modes, and methods return a copy with one field changed:
//
//	testtar.Build(t,
//		testtar.Dir("etc"),
//		testtar.File("etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
//		testtar.File("bin/ping", "…").Mode(0o4755).Xattr("security.capability", capv),
//		testtar.Whiteout("etc/motd"),
//	)
//
// Every entry is PAX format with a fixed mtime (Mtime), owned by 0:0, so
// the same entries give the same bytes. Tests that need a tar this builder
// cannot write (a stream too large for memory, a truncated or deliberately
// malformed archive, a raw header) write it by hand and say why.
package testtar

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"time"
)

// Mtime is the modification time of every entry not given another.
var Mtime = time.Unix(1700000000, 0)

// Entry is one tar entry: its header and, for a regular file, its data.
type Entry struct {
	Header tar.Header
	Data   []byte
}

func entry(typ byte, name string, mode int64) Entry {
	return Entry{Header: tar.Header{Typeflag: typ, Name: name, Mode: mode, ModTime: Mtime, Format: tar.FormatPAX}}
}

// File is a regular file holding data, mode 0644.
func File(name, data string) Entry { return FileBytes(name, []byte(data)) }

// FileBytes is File with data as bytes (not copied).
func FileBytes(name string, data []byte) Entry {
	e := entry(tar.TypeReg, name, 0o644)
	e.Data = data
	e.Header.Size = int64(len(data))
	return e
}

// Dir is a directory, mode 0755.
func Dir(name string) Entry { return entry(tar.TypeDir, name, 0o755) }

// Symlink is a symbolic link name -> target, mode 0777.
func Symlink(name, target string) Entry {
	e := entry(tar.TypeSymlink, name, 0o777)
	e.Header.Linkname = target
	return e
}

// Hardlink is a hard link name -> target, mode 0644.
func Hardlink(name, target string) Entry {
	e := entry(tar.TypeLink, name, 0o644)
	e.Header.Linkname = target
	return e
}

// Whiteout removes name of the lower layers: an empty file whose last
// component has the ".wh." prefix.
func Whiteout(name string) Entry {
	i := strings.LastIndex(name, "/")
	return File(name[:i+1]+".wh."+name[i+1:], "")
}

// Opaque makes dir opaque: the ".wh..wh..opq" marker in it.
func Opaque(dir string) Entry { return File(strings.TrimSuffix(dir, "/")+"/.wh..wh..opq", "") }

// Device is a character (kind 'c') or block ('b') device or a FIFO ('p'),
// mode 0666.
func Device(kind byte, name string, major, minor int64) Entry {
	typ := map[byte]byte{'c': tar.TypeChar, 'b': tar.TypeBlock, 'p': tar.TypeFifo}[kind]
	e := entry(typ, name, 0o666)
	e.Header.Devmajor, e.Header.Devminor = major, minor
	return e
}

// Mode returns e with permission bits m (setuid, setgid and sticky included).
func (e Entry) Mode(m int64) Entry { e.Header.Mode = m; return e }

// Owner returns e owned by uid:gid.
func (e Entry) Owner(uid, gid int) Entry { e.Header.Uid, e.Header.Gid = uid, gid; return e }

// Names returns e with the user and group names of its header.
func (e Entry) Names(user, group string) Entry {
	e.Header.Uname, e.Header.Gname = user, group
	return e
}

// Format returns e written in format f instead of PAX.
func (e Entry) Format(f tar.Format) Entry { e.Header.Format = f; return e }

// Mtime returns e modified at sec.nsec.
func (e Entry) Mtime(sec, nsec int64) Entry { e.Header.ModTime = time.Unix(sec, nsec); return e }

// Xattr returns e with the extended attribute name set to value (a PAX
// "SCHILY.xattr." record).
func (e Entry) Xattr(name, value string) Entry { return e.PAX("SCHILY.xattr."+name, value) }

// PAX returns e with the PAX record key set to value.
func (e Entry) PAX(key, value string) Entry {
	recs := make(map[string]string, len(e.Header.PAXRecords)+1)
	for k, v := range e.Header.PAXRecords {
		recs[k] = v
	}
	recs[key] = value
	e.Header.PAXRecords = recs
	return e
}

// TB is the part of testing.TB Build uses.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Build returns the tar of entries, in order, with its end-of-archive
// marker. A header archive/tar refuses fails the test.
func Build(t TB, entries ...Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Write(&buf, entries...); err != nil {
		t.Fatalf("building a test tar: %v", err)
	}
	return buf.Bytes()
}

// Write writes the tar of entries to w, for tars streamed into a
// compressor or a pipe.
func Write(w io.Writer, entries ...Entry) error {
	tw := tar.NewWriter(w)
	for _, e := range entries {
		h := e.Header
		if err := tw.WriteHeader(&h); err != nil {
			return fmt.Errorf("entry %q: %w", e.Header.Name, err)
		}
		if _, err := tw.Write(e.Data); err != nil {
			return fmt.Errorf("entry %q: %w", e.Header.Name, err)
		}
	}
	return tw.Close()
}

// Incompressible returns n bytes that do not compress, the same for the
// same seed: content whose layer blob is as big as itself.
func Incompressible(seed byte, n int) []byte {
	var s [32]byte
	s[0] = seed
	b := make([]byte, n)
	rand.NewChaCha8(s).Read(b)
	return b
}
