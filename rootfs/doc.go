// Package rootfs merges the layers of a container image into one in-memory
// filesystem tree (fstree.Tree), the way overlayfs/containerd show it to a
// container, in one streaming pass over each layer tar. File data goes from the
// tar reader straight to an fstree.Store; memory grows only with the number of
// entries.
//
// The rules, each enforced next to its code and each with a test case in
// merge_test.go:
//
// Confinement (resolve.go; the walk is internal/confine's, the one resolver
// every package uses). Nothing of the host is ever touched: the tree lives in
// memory, and every name is resolved inside the image root.
//   - An entry name is cleaned lexically as if it were absolute ("/" + name), so
//     absolute names are relative to the image root and ".." never climbs above
//     it ("../../etc/x" is "etc/x"). This is containerd's rule (it cleans the
//     name, then resolves the parent with fs.RootPath, which clamps at the
//     root); umoci (securejoin) does the same. Moby's older "breakout" error is
//     not used: the result is the same tree containerd gives.
//   - Symlinks in the parent components of a name are followed inside the
//     image: an absolute target starts again at the image root and ".." at the
//     root stays at the root (like chroot). At most 40 symlinks are followed
//     per lookup (Linux's MAXSYMLINKS) and one lookup walks at most 1024
//     components through symlink targets beyond the name's own; more is an
//     error. Symlink targets are cleaned lexically before they are walked
//     (containerd's fs.RootPath does the same; the other packages walk them
//     as the kernel does). A symlink with an empty target cannot be
//     traversed (Linux: ENOENT).
//   - The final component is never followed: an entry named like an existing
//     symlink replaces the symlink.
//   - A parent component that is a file (or device, fifo) is an error.
//   - An entry that resolves to the root itself ("./", "/", "..", "") is
//     ignored, as containerd does: the root directory of a container is always
//     the snapshotter's 0755 root-owned directory.
//   - Names with "\" are ordinary names. A name component longer than 255
//     bytes, a name or link target longer than Limits.MaxPathLen, and a NUL
//     anywhere are errors.
//
// Whiteouts (merge.go).
//   - ".wh.NAME" removes NAME (and its subtree) of the lower layers; the
//     final component is not followed (a whiteout of a symlink removes the
//     symlink). What the whiteout's own layer put at NAME stays, before or
//     after the whiteout in the tar (OCI layer spec; umoci agrees): a
//     directory this layer wrote into keeps only this layer's entries. A whiteout for a missing name, or in a
//     missing directory (including one behind a dangling symlink), is a no-op
//     and creates nothing (umoci behaviour; containerd would leave an empty
//     directory there).
//   - ".wh." (empty name), ".wh.." and ".wh..." would name the directory
//     itself or its parent (for "/.wh.." the root): they are rejected as
//     malformed, like containerd's validateWhiteout (errInvalidArchive).
//   - ".wh..wh..opq" makes its directory opaque: after the layer, the
//     directory holds exactly what this layer put in it, recursively, wherever
//     the marker stands in the tar. The merge records every (directory, name)
//     edge the layer writes or walks through, and prunes the rest at the end
//     of the layer. A marker in a missing directory is a no-op.
//   - Other ".wh..wh." names are AUFS metadata (".wh..wh.plnk", ".wh..wh.aufs"):
//     ignored, together with anything below them.
//   - Whiteout entries never appear in the result, whatever their type.
//
// Entries (merge.go).
//   - Every non-directory entry creates a new inode (overwriting a hardlinked
//     path never changes the other links); the replaced inode's data is
//     released to the store when its last link goes.
//   - A directory entry over an existing directory keeps the children and
//     takes the new metadata (mode, owner, times, xattrs: replaced, not
//     merged); over anything else it replaces it. A non-directory over a
//     directory removes the whole subtree. The last duplicate wins.
//   - A hardlink names the inode at the target path just before the entry is
//     applied (same or a lower layer; the target's parents are resolved inside
//     the root like any name, its final component is not followed, so a link
//     to a symlink links the symlink inode). A missing target or a directory
//     target is an error. The hardlink header's own metadata is ignored (as
//     umoci and GNU tar do): a link has none of its own. A link to itself, or
//     over the directory holding its target, keeps that inode (containerd and
//     umoci unlink first and then fail).
//   - Parents missing from a layer are created as root-owned 0755 directories
//     with a zero mtime.
//   - Modes keep setuid, setgid and sticky (mode & 07777); numeric uid/gid are
//     used and names ignored; mtime keeps nanoseconds; atime is the later of
//     atime and mtime (containerd), ctime is the PAX ctime or the mtime.
//   - Xattrs come from PAX "SCHILY.xattr.NAME" and "LIBARCHIVE.xattr.NAME"
//     (URL-escaped name, base64 value) records; SCHILY wins when both are set.
//     Values over 64 KiB and names over 255 bytes are errors (Linux limits).
//     user.* xattrs on anything but files and directories are dropped (Linux
//     refuses them; containerd drops them with a warning).
//   - GNU sparse files (all formats archive/tar reads) are regular files whose
//     holes read as zeros; the store may turn zero blocks back into holes.
//   - PAX global headers are ignored; any other entry type is an error.
//
// Limits (limits.go). Total bytes (file data plus xattrs and symlink targets,
// counted from the headers before any data is read, so a decompression bomb is
// stopped at its first oversized entry), entries (tar entries plus implied
// parent directories) and path length are bounded; the errors name the flag
// that raises each limit.
package rootfs
