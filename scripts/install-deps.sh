#!/usr/bin/env bash
# Installs the tools the integration tests and the demo use: a real registry
# server, umoci, QEMU (x86_64 and aarch64 guests, qemu-user for arm64
# binaries), busybox, kmod, binutils for x86_64 and aarch64 (to check the
# committed docker2vm-setuser programs), shellcheck (for the entrypoint
# script) and the Gondolin host, and makes apt fetch arm64 packages too (the
# arm64 fixture base and Debian image are made of them).
# Packages and settings already present are left alone, so running it again
# costs a few seconds. Needs root (apt-get); prints what to run otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(docker-registry umoci apache2-utils qemu-system-x86 qemu-system-arm qemu-user-static qemu-utils busybox-static kmod cpio e2fsprogs lz4 zstd util-linux debootstrap gpgv debian-archive-keyring runc time openssl binutils binutils-aarch64-linux-gnu shellcheck zsh fish)

# The fixtures are built for amd64 and arm64 from Debian packages (kernel,
# busybox, debootstrap's): apt must fetch both architectures. Add the one
# that is not native once; the package lists must then be fetched again.
native_arch=$(dpkg --print-architecture)
foreign_archs=$(dpkg --print-foreign-architectures)
need_update=
for arch in amd64 arm64; do
  if [ "$arch" = "$native_arch" ] || printf '%s\n' $foreign_archs | grep -qx "$arch"; then
    continue
  fi
  if [ "$(id -u)" = 0 ]; then
    echo "install-deps: adding the $arch architecture to dpkg" >&2
    dpkg --add-architecture "$arch"
    need_update=1
  else
    echo "install-deps: apt does not fetch $arch packages; as root: dpkg --add-architecture $arch && apt-get update" >&2
    if [ "${CI:-}" = true ]; then exit 1; fi
  fi
done

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing Debian packages: ${missing[*]}" >&2
    echo "install-deps: run as root, or: sudo apt-get install -y ${missing[*]}" >&2
    # On a laptop the tests that need these tools skip; in CI they must not.
    if [ "${CI:-}" = true ]; then exit 1; fi
  fi
  if [ "$(id -u)" = 0 ]; then
    echo "install-deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    need_update=
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# The fixture base bundles fetch the Debian cloud kernels (and arm64's
# busybox) with apt-get download, which needs package lists for both
# architectures.
if [ "$(id -u)" = 0 ] && { [ -n "$need_update" ] || ! apt-cache show linux-image-cloud-amd64:amd64 >/dev/null 2>&1 ||
  ! apt-cache show linux-image-cloud-arm64:arm64 >/dev/null 2>&1; }; then
  apt-get update -qq
fi

if [ -f testdata/gondolin-host/package-lock.json ] && [ ! -d testdata/gondolin-host/node_modules/@earendil-works/gondolin ]; then
  echo "install-deps: installing the Gondolin host from npm" >&2
  (cd testdata/gondolin-host && npm ci --no-audit --no-fund --loglevel=error)
fi
go mod download
