#!/usr/bin/env bash
# Installs the tools the integration tests and the demo use: a real registry
# server, umoci, QEMU (x86_64 and aarch64 guests, qemu-user for arm64
# binaries), busybox, kmod, binutils for x86_64 and aarch64 (to check the
# committed docker2vm-setuser programs), ssh-keygen (a key for the --ssh
# tests), shellcheck (for the entrypoint script), the docker buildx plugin
# and a recent qemu-user emulator (from Debian sid, see install_buildx and
# install_qemu_user) and the Gondolin host, and makes apt
# fetch arm64 packages too (the arm64 fixture base and Debian image are made
# of them).
# Packages and settings already present are left alone, so running it again
# costs a few seconds. Needs root (apt-get); prints what to run otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(docker-registry umoci make gcc bzip2 apache2-utils qemu-system-x86 qemu-system-arm qemu-user-static qemu-utils busybox-static kmod cpio e2fsprogs lz4 zstd util-linux debootstrap gpgv debian-archive-keyring runc time openssl openssh-client binutils binutils-aarch64-linux-gnu shellcheck zsh fish)

# The fixture bases' musl-linked busybox is built for both architectures:
# the C compiler for the one this host is not.
case $(dpkg --print-architecture) in
  arm64) PKGS+=(gcc-x86-64-linux-gnu) ;;
  *) PKGS+=(gcc-aarch64-linux-gnu) ;;
esac

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

sid_updated=
# sid_deb PKG: sets deb to the path of Debian sid's package PKG for this
# architecture, fetched with apt-get options that leave the system's apt
# sources and package lists alone (from the mirror the system already
# uses), and kept in the test cache: a second run fetches nothing.
sid_deb() {
  local pkg=$1 cache
  if [ -n "${DOCKER2VM_TEST_CACHE:-}" ]; then
    cache=$DOCKER2VM_TEST_CACHE/sid
  else
    cache=${XDG_CACHE_HOME:-$HOME/.cache}/docker2vm-test/sid
  fi
  deb=""
  local f
  for f in "$cache/${pkg}_"*.deb; do
    if [ -f "$f" ]; then deb=$f; fi
  done
  if [ -n "$deb" ]; then
    return 0
  fi
  # The mirror the system already uses: the URI of its release's main
  # suite in /etc/apt/sources.list or sources.list.d (one-line or deb822).
  local codename mirror src srcs=()
  for src in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    if [ -f "$src" ]; then srcs+=("$src"); fi
  done
  # shellcheck source=/dev/null
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  mirror=$(awk -v suite="$codename" '
    function flush() {
      if (!found && uris != "" && types ~ /(^|[ \t])deb([ \t]|$)/ && index(" " suites " ", " " suite " ")) { print uris; found = 1; exit }
      uris = ""; suites = ""; types = ""
    }
    FNR == 1 { flush() }
    /^[ \t]*#/ { next }
    /^[ \t]*deb[ \t]/ {
      i = 2
      if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
      if ($(i + 1) == suite) { print $i; found = 1; exit }
      next
    }
    /^Types:/ { sub(/^Types:/, ""); types = $0 }
    /^URIs:/ { uris = $2 }
    /^Suites:/ { sub(/^Suites:/, ""); suites = $0 }
    /^[ \t]*$/ { flush() }
    END { flush() }
  ' "${srcs[@]}" /dev/null)
  if [ -z "$mirror" ]; then
    mirror=http://deb.debian.org/debian
  fi
  mkdir -p "$cache/lists/partial" "$cache/apt/archives/partial"
  echo "deb [arch=$native_arch signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror sid main" >"$cache/sid.list"
  local opts=(-o "Dir::Etc::sourcelist=$cache/sid.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$cache/lists"
    -o "Dir::Cache=$cache/apt" -o APT::Get::List-Cleanup=0)
  # The files are the caller's own: apt need not switch to its _apt user.
  opts+=(-o APT::Sandbox::User="$(id -un)")
  echo "install-deps: fetching $pkg from sid ($mirror)" >&2
  if [ -z "$sid_updated" ]; then
    apt-get -qq "${opts[@]}" update
    sid_updated=1
  fi
  # apt downloads into the current directory.
  (cd "$cache" && apt-get -qq "${opts[@]}" download "$pkg")
  for f in "$cache/${pkg}_"*.deb; do
    if [ -f "$f" ]; then deb=$f; fi
  done
  if [ -z "$deb" ]; then
    echo "install-deps: apt-get download $pkg (sid) gave no package" >&2
    return 1
  fi
}

# The docker buildx plugin, for the tests that build through a real
# `docker buildx` (its remote driver needs no Docker engine). Debian has it
# only from trixie on (docker-buildx; sid has 0.29): take sid's package,
# unpack it, and install its binary where the docker CLI finds plugins.
# Nothing is done when the plugin is already there and runs.
install_buildx() {
  local plugdir
  if [ "$(id -u)" = 0 ]; then
    plugdir=/usr/local/lib/docker/cli-plugins
  else
    plugdir=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins
  fi
  if [ -x "$plugdir/docker-buildx" ] && "$plugdir/docker-buildx" version >/dev/null 2>&1; then
    return 0
  fi
  sid_deb docker-buildx
  local tmp
  tmp=$(mktemp -d)
  dpkg-deb -x "$deb" "$tmp"
  mkdir -p "$plugdir"
  install -m 0755 "$tmp/usr/libexec/docker/cli-plugins/docker-buildx" "$plugdir/docker-buildx.new"
  mv -f "$plugdir/docker-buildx.new" "$plugdir/docker-buildx"
  rm -rf "$tmp"
  echo "install-deps: installed $("$plugdir/docker-buildx" version) as $plugdir/docker-buildx" >&2
}
if command -v docker >/dev/null; then
  install_buildx
else
  echo "install-deps: the docker CLI is missing: the docker buildx tests need it (e.g. apt-get install docker.io)" >&2
  if [ "${CI:-}" = true ]; then exit 1; fi
fi

if [ -f testdata/gondolin-host/package-lock.json ] && { [ ! -d testdata/gondolin-host/node_modules/@earendil-works/gondolin ] ||
  [ ! -x testdata/gondolin-host/node_modules/node/bin/node ] || [ ! -x testdata/gondolin-host/node_modules/.bin/bunx ]; }; then
  echo "install-deps: installing the Gondolin host, the Node.js it needs (npm's node package) and Bun (the npm packages' bunx test) from npm" >&2
  (cd testdata/gondolin-host && npm ci --no-audit --no-fund --loglevel=error)
fi
go mod download

# qemu-user for the other architecture's programs (the arm64 unit tests,
# busybox's applet list, debootstrap's second stage): qemuuser.Path
# takes one no older than 8.0, as bookworm's 7.2 now and then hangs a
# forking multi-threaded program. Without one, install the emulator of
# sid's qemu-user (statically linked: it runs on older releases) as
# /usr/local/bin/qemu-ARCH, ahead of the system's on the PATH.
install_qemu_user() {
  local arch=$1 name=$2
  if go run ./internal/testenv/cmd/qemuuser "$arch" >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: no qemu-user 8.0 or newer for $arch programs (go run ./internal/testenv/cmd/qemuuser $arch says why); run this script as root to install Debian sid's" >&2
    if [ "${CI:-}" = true ]; then exit 1; fi
    return 0
  fi
  sid_deb qemu-user
  local tmp
  tmp=$(mktemp -d)
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" "./usr/bin/$name"
  install -m 0755 "$tmp/usr/bin/$name" "/usr/local/bin/$name.new"
  mv -f "/usr/local/bin/$name.new" "/usr/local/bin/$name"
  rm -rf "$tmp"
  echo "install-deps: installed $("/usr/local/bin/$name" --version | head -1) as /usr/local/bin/$name" >&2
  go run ./internal/testenv/cmd/qemuuser "$arch" >/dev/null
}
case $native_arch in
  amd64) install_qemu_user arm64 qemu-aarch64 ;;
  arm64) install_qemu_user amd64 qemu-x86_64 ;;
esac
