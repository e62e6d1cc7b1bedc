package gondolin

// The archive of a guest for an image registry: a gzip tar holding the
// asset directory flat (manifest.json and the files it names), the form
// Gondolin's `tar -xzf` then import expects. It is deterministic: the same
// guest gives the same bytes (entries in name order, mode 0644, owner 0:0,
// times from the manifest's buildTime, a fixed gzip header), so an
// identical build published twice has one sha256. A file with all-zero
// blocks (rootfs.ext4 is mostly free space) is stored in the PAX 1.0 sparse
// format that GNU tar and bsdtar extract as a sparse file: only its data
// is compressed and, on the machine that pulls it, written. Which blocks
// are data is decided by content (internal/sparse.DataRuns), so the bytes
// do not depend on the filesystem the guest was on.

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/docker2vm/docker2vm/internal/sparse"
)

const tarBlock = 512

// archiveFiles lists what the archive of the guest in dir holds: its
// manifest and each asset, confined to dir, in name order.
func archiveFiles(dir string, m *Manifest) ([]string, error) {
	assets, err := importAssets(m)
	if err != nil {
		return nil, err
	}
	names := []string{ManifestName}
	for _, a := range assets {
		names = append(names, filepath.ToSlash(a.name))
	}
	sort.Strings(names)
	return names, nil
}

// writeGuestArchive writes the guest in dir (manifest m) to w.
func writeGuestArchive(ctx context.Context, w io.Writer, dir string, m *Manifest) error {
	names, err := archiveFiles(dir, m)
	if err != nil {
		return err
	}
	mtime := int64(0)
	if t, err := time.Parse(time.RFC3339Nano, m.BuildTime); err == nil && t.Unix() > 0 {
		mtime = t.Unix()
	}
	zw, err := gzip.NewWriterLevel(w, gzip.DefaultCompression)
	if err != nil {
		return err
	}
	zw.Header = gzip.Header{OS: 255} // no name, no time: the same bytes every time
	tw := &tarWriter{w: zw, mtime: mtime}
	for _, name := range names {
		src, err := confinedRegular(dir, filepath.FromSlash(name))
		if err != nil {
			return err
		}
		if err := tw.addFile(ctx, name, src); err != nil {
			return fmt.Errorf("archiving %s: %w", src, err)
		}
	}
	if err := tw.close(); err != nil {
		return err
	}
	return zw.Close()
}

// tarWriter writes POSIX (ustar + PAX) tar entries by hand: Go's
// archive/tar cannot write sparse files.
type tarWriter struct {
	w     io.Writer
	mtime int64
	n     int // PAX headers written, to name them
}

// addFile adds the regular file at path as name: sparse when it has zero
// blocks, else plain.
func (t *tarWriter) addFile(ctx context.Context, name, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	runs, err := sparse.DataRuns(ctx, f, size)
	if err != nil {
		return err
	}
	if len(runs) == 1 && runs[0] == (sparse.Run{Off: 0, Len: size}) || size == 0 {
		return t.entry(name, nil, size, []sparse.Run{{Off: 0, Len: size}}, f, "")
	}
	// PAX 1.0 sparse: the map, as decimal lines padded to a block, then
	// the data of each run, one after the other.
	if k := len(runs); k == 0 || runs[k-1].Off+runs[k-1].Len < size {
		// A file that ends in a hole ends its map with an empty run at
		// its size, as GNU tar writes it: extractors extend the file to
		// the end of the last run, not to GNU.sparse.realsize.
		runs = append(runs, sparse.Run{Off: size})
	}
	var mp strings.Builder
	fmt.Fprintf(&mp, "%d\n", len(runs))
	var data int64
	for _, r := range runs {
		fmt.Fprintf(&mp, "%d\n%d\n", r.Off, r.Len)
		data += r.Len
	}
	header := mp.String() + strings.Repeat("\x00", pad(int64(mp.Len())))
	records := [][2]string{
		{"GNU.sparse.major", "1"}, {"GNU.sparse.minor", "0"},
		{"GNU.sparse.name", name}, {"GNU.sparse.realsize", strconv.FormatInt(size, 10)},
	}
	dir, base := filepath.Split(filepath.FromSlash(name))
	stored := filepath.ToSlash(filepath.Join(dir, "GNUSparseFile.0", base))
	return t.entry(stored, records, int64(len(header))+data, runs, f, header)
}

// entry writes one regular file: a PAX header when records (or the size)
// need one, the ustar header, prefix (the sparse map), the runs of f, and
// the padding.
func (t *tarWriter) entry(name string, records [][2]string, size int64, runs []sparse.Run, f *os.File, prefix string) error {
	if size >= 1<<33 { // more than ustar's 11 octal digits
		records = append(records, [2]string{"size", strconv.FormatInt(size, 10)})
	}
	if len(name) > 100 {
		return fmt.Errorf("name %q is too long for the archive", name)
	}
	if len(records) > 0 {
		var b strings.Builder
		for _, r := range records {
			b.WriteString(paxRecord(r[0], r[1]))
		}
		t.n++
		hdr := ustar(fmt.Sprintf("PaxHeaders.%d/%s", t.n, pathBase(name)), 'x', int64(b.Len()), t.mtime)
		if _, err := t.w.Write(hdr[:]); err != nil {
			return err
		}
		if _, err := io.WriteString(t.w, b.String()+strings.Repeat("\x00", pad(int64(b.Len())))); err != nil {
			return err
		}
	}
	hdr := ustar(name, '0', size, t.mtime)
	if _, err := t.w.Write(hdr[:]); err != nil {
		return err
	}
	if _, err := io.WriteString(t.w, prefix); err != nil {
		return err
	}
	var written int64 = int64(len(prefix))
	for _, r := range runs {
		n, err := io.Copy(t.w, io.NewSectionReader(f, r.Off, r.Len))
		if err != nil {
			return err
		}
		if n != r.Len {
			return fmt.Errorf("%s changed while it was archived", f.Name())
		}
		written += n
	}
	_, err := t.w.Write(make([]byte, pad(written)))
	return err
}

// close writes the two zero blocks that end a tar.
func (t *tarWriter) close() error {
	_, err := t.w.Write(make([]byte, 2*tarBlock))
	return err
}

func pad(n int64) int { return int((tarBlock - n%tarBlock) % tarBlock) }

func pathBase(name string) string {
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		return name[i+1:]
	}
	return name
}

// paxRecord encodes one PAX record: "LEN KEY=VALUE\n", LEN counting
// itself.
func paxRecord(k, v string) string {
	n := len(k) + len(v) + 3
	for {
		s := strconv.Itoa(n) + " " + k + "=" + v + "\n"
		if len(s) == n {
			return s
		}
		n = len(s)
	}
}

// ustar encodes a ustar header for a file owned by 0:0, mode 0644. A size
// that does not fit is written as 0 (a PAX "size" record carries it).
func ustar(name string, typ byte, size, mtime int64) [tarBlock]byte {
	var h [tarBlock]byte
	copy(h[0:100], name)
	octal(h[100:108], 0o644)
	octal(h[108:116], 0)
	octal(h[116:124], 0)
	if size >= 1<<33 {
		size = 0
	}
	octal(h[124:136], size)
	octal(h[136:148], mtime)
	h[156] = typ
	copy(h[257:263], "ustar\x00")
	copy(h[263:265], "00")
	copy(h[148:156], "        ")
	var sum int64
	for _, b := range h {
		sum += int64(b)
	}
	copy(h[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return h
}

// octal writes v as zero-padded octal digits and a NUL into field.
func octal(field []byte, v int64) {
	copy(field, fmt.Sprintf("%0*o\x00", len(field)-1, v))
}
