package rootfs

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"time"

	"github.com/docker2vm/docker2vm/fstree"
)

// WriteTar writes t as one tar stream: entries in fstree.Walk order (depth
// first, names in byte order), PAX format (nanosecond mtimes, long names,
// SCHILY.xattr records), directories with a trailing slash, the second and
// later names of a hardlinked inode as tar hardlinks to the first, devices
// and FIFOs as such. The root directory itself is not written (Apply ignores
// it). File data is read back through o. The same tree gives the same bytes.
func WriteTar(ctx context.Context, t *fstree.Tree, o fstree.Opener, w io.Writer) error {
	tw := tar.NewWriter(w)
	first := map[*fstree.Inode]string{} // hardlinked inode -> first name written
	err := t.Walk(func(p string, n *fstree.Inode) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == "" {
			return nil
		}
		hdr := &tar.Header{
			Name:    p,
			Mode:    int64(n.Mode & 0o7777),
			Uid:     int(n.UID),
			Gid:     int(n.GID),
			ModTime: time.Unix(n.Mtime.Sec, int64(n.Mtime.Nsec)),
			Format:  tar.FormatPAX,
		}
		if len(n.Xattrs) > 0 {
			hdr.PAXRecords = make(map[string]string, len(n.Xattrs))
			for _, x := range n.Xattrs {
				hdr.PAXRecords[paxSchilyXattr+x.Name] = string(x.Value)
			}
		}
		if n.Type != fstree.TypeDir && n.Links() > 1 {
			if name, ok := first[n]; ok {
				hdr.Typeflag = tar.TypeLink
				hdr.Linkname = name
				hdr.PAXRecords = nil
				return tw.WriteHeader(hdr)
			}
			first[n] = p
		}
		switch n.Type {
		case fstree.TypeDir:
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
		case fstree.TypeRegular:
			hdr.Typeflag = tar.TypeReg
			hdr.Size = n.Size()
		case fstree.TypeSymlink:
			hdr.Typeflag = tar.TypeSymlink
			hdr.Linkname = n.Target
		case fstree.TypeCharDev, fstree.TypeBlockDev:
			hdr.Typeflag = tar.TypeChar
			if n.Type == fstree.TypeBlockDev {
				hdr.Typeflag = tar.TypeBlock
			}
			hdr.Devmajor, hdr.Devminor = int64(n.Major), int64(n.Minor)
		case fstree.TypeFIFO:
			hdr.Typeflag = tar.TypeFifo
		default:
			return fmt.Errorf("%q: a %s cannot be written to a tar stream", p, n.Type)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%q: %w", p, err)
		}
		if hdr.Size == 0 {
			return nil
		}
		ra, err := o.Open(n.Content)
		if err != nil {
			return fmt.Errorf("%q: opening file data: %w", p, err)
		}
		if _, err := io.Copy(tw, io.NewSectionReader(ra, 0, hdr.Size)); err != nil {
			return fmt.Errorf("%q: copying file data: %w", p, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("writing tar: %w", err)
	}
	return tw.Close()
}
