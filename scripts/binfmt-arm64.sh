#!/bin/sh
# Registers qemu-aarch64-static with binfmt_misc, so that this x86_64 host
# runs linux/arm64 programs directly: test binaries that start themselves
# again, debootstrap's second stage, BuildKit RUN steps of arm64 builds.
# Needs root and a kernel with binfmt_misc; a no-op when already there.
# The F flag opens the interpreter now, so it also works inside chroots
# and containers.
set -eu
qemu=$(command -v qemu-aarch64-static || true)
if [ -z "$qemu" ]; then
  echo "binfmt-arm64: qemu-aarch64-static not found: install qemu-user-static" >&2
  exit 1
fi
dir=/proc/sys/fs/binfmt_misc
if [ -e "$dir/qemu-aarch64" ] || [ -e "$dir/qemu-aarch64-static" ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "binfmt-arm64: registering qemu-aarch64 needs root (or: sudo update-binfmts --enable qemu-aarch64)" >&2
  exit 1
fi
if [ ! -e "$dir/register" ]; then
  mount -t binfmt_misc binfmt_misc "$dir" 2>/dev/null || {
    echo "binfmt-arm64: cannot mount binfmt_misc on $dir (a container without it?)" >&2
    exit 1
  }
fi
printf '%s' ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:'"$qemu"':F' > "$dir/register"
echo "binfmt-arm64: registered $qemu for linux/arm64 programs" >&2
