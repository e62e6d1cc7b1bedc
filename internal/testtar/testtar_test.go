package testtar

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"testing"
	"time"
)

// TestBuild reads back what Build writes: every kind, with the modifiers.
func TestBuild(t *testing.T) {
	raw := Build(t,
		Dir("etc"),
		File("etc/passwd", "root").Mode(0o600).Owner(1, 2).Names("u", "g"),
		Symlink("bin", "usr/bin"),
		Hardlink("etc/passwd-", "etc/passwd"),
		Whiteout("a/b"),
		Opaque("opq/"),
		Device('c', "dev/null", 1, 3),
		Device('b', "dev/sda", 8, 0),
		Device('p', "fifo", 0, 0),
		File("x", "").Xattr("user.k", "v").PAX("LIBARCHIVE.xattr.user.l", "dg==").Mtime(5, 6),
		File("old", "u").Format(tar.FormatUSTAR),
	)
	type want struct {
		name, link, data string
		typ              byte
		mode             int64
		mtime            time.Time
	}
	wants := []want{
		{"etc", "", "", tar.TypeDir, 0o755, Mtime},
		{"etc/passwd", "", "root", tar.TypeReg, 0o600, Mtime},
		{"bin", "usr/bin", "", tar.TypeSymlink, 0o777, Mtime},
		{"etc/passwd-", "etc/passwd", "", tar.TypeLink, 0o644, Mtime},
		{"a/.wh.b", "", "", tar.TypeReg, 0o644, Mtime},
		{"opq/.wh..wh..opq", "", "", tar.TypeReg, 0o644, Mtime},
		{"dev/null", "", "", tar.TypeChar, 0o666, Mtime},
		{"dev/sda", "", "", tar.TypeBlock, 0o666, Mtime},
		{"fifo", "", "", tar.TypeFifo, 0o666, Mtime},
		{"x", "", "", tar.TypeReg, 0o644, time.Unix(5, 6)},
		{"old", "", "u", tar.TypeReg, 0o644, Mtime},
	}
	tr := tar.NewReader(bytes.NewReader(raw))
	for i, w := range wants {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		data, _ := io.ReadAll(tr)
		if h.Name != w.name || h.Linkname != w.link || string(data) != w.data || h.Typeflag != w.typ || h.Mode != w.mode || !h.ModTime.Equal(w.mtime) {
			t.Errorf("entry %d: %q %q %q type %c mode %o mtime %v; want %+v", i, h.Name, h.Linkname, data, h.Typeflag, h.Mode, h.ModTime, w)
		}
		switch h.Name {
		case "etc/passwd":
			if h.Uid != 1 || h.Gid != 2 || h.Uname != "u" || h.Gname != "g" {
				t.Errorf("owner %d:%d %s:%s", h.Uid, h.Gid, h.Uname, h.Gname)
			}
		case "dev/null":
			if h.Devmajor != 1 || h.Devminor != 3 {
				t.Errorf("device %d,%d", h.Devmajor, h.Devminor)
			}
		case "x":
			if h.PAXRecords["SCHILY.xattr.user.k"] != "v" || h.PAXRecords["LIBARCHIVE.xattr.user.l"] != "dg==" {
				t.Errorf("PAX records %v", h.PAXRecords)
			}
		}
	}
	if _, err := tr.Next(); err != io.EOF {
		t.Errorf("after the last entry: %v", err)
	}
	if !bytes.Equal(raw, Build(t, Dir("etc"), File("etc/passwd", "root").Mode(0o600).Owner(1, 2).Names("u", "g"),
		Symlink("bin", "usr/bin"), Hardlink("etc/passwd-", "etc/passwd"), Whiteout("a/b"), Opaque("opq/"),
		Device('c', "dev/null", 1, 3), Device('b', "dev/sda", 8, 0), Device('p', "fifo", 0, 0),
		File("x", "").Xattr("user.k", "v").PAX("LIBARCHIVE.xattr.user.l", "dg==").Mtime(5, 6),
		File("old", "u").Format(tar.FormatUSTAR))) {
		t.Error("the same entries gave other bytes")
	}
}

// TestModifiersCopy: a modifier changes a copy, never the entry it was
// called on (table tests share entries between cases).
func TestModifiersCopy(t *testing.T) {
	base := File("f", "x").Xattr("user.a", "1")
	_ = base.Xattr("user.b", "2").Mode(0o700)
	if len(base.Header.PAXRecords) != 1 || base.Header.Mode != 0o644 {
		t.Errorf("the base entry changed: %+v", base.Header)
	}
}

// recorder records a fatal error instead of stopping the test.
type recorder struct{ failed string }

func (r *recorder) Helper()                        {}
func (r *recorder) Fatalf(format string, _ ...any) { r.failed = format }

func TestWriteError(t *testing.T) {
	bad := File("f", "x")
	bad.Header.Size = 0 // more data than the header says
	if err := Write(io.Discard, bad); !errors.Is(err, tar.ErrWriteTooLong) {
		t.Errorf("Write = %v, want ErrWriteTooLong", err)
	}
	r := &recorder{}
	Build(r, bad)
	if r.failed == "" {
		t.Error("Build of a bad entry did not fail the test")
	}
}
