#!/usr/bin/env bash
# Installs the tools the integration tests and the demo use: a real registry
# server, umoci, QEMU (system and user mode), busybox, kmod, binutils for
# x86_64 and aarch64 (to check the committed docker2vm-setuser programs),
# shellcheck (for the generated entrypoint script) and the Gondolin host.
# Packages already present are left alone, so running it again costs a few
# seconds.
# Needs root (apt-get); prints what to run otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(docker-registry umoci apache2-utils qemu-system-x86 qemu-utils busybox-static kmod cpio e2fsprogs lz4 zstd util-linux debootstrap gpgv debian-archive-keyring runc time openssl binutils binutils-aarch64-linux-gnu qemu-user-static shellcheck)

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
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# The fixture base bundle fetches the Debian cloud kernel with apt-get
# download, which needs package lists.
if [ "$(id -u)" = 0 ] && ! apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1; then
  apt-get update -qq
fi

if [ -f testdata/gondolin-host/package-lock.json ] && [ ! -d testdata/gondolin-host/node_modules/@earendil-works/gondolin ]; then
  echo "install-deps: installing the Gondolin host from npm" >&2
  (cd testdata/gondolin-host && npm ci --no-audit --no-fund --loglevel=error)
fi
go mod download
