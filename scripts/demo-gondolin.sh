#!/bin/sh
# The demo with Gondolin's own base and CLI, as a Mac user runs it (make
# demo on macOS; make demo-gondolin anywhere): pulls alpine-base with the
# gondolin CLI, converts a public image from Docker Hub for the host's
# architecture, and runs commands in it with `gondolin exec`. Needs the
# network (GitHub for the base, Docker Hub for the image), Go, npm and QEMU;
# no apt, no root. The Gondolin host and the Node.js it needs (>= 23.6) come
# from npm, pinned in testdata/gondolin-host, as for the test suite.
set -eu
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
OUT=${OUT:-out/demo-gondolin}
IMAGE=${IMAGE:-docker.io/library/busybox:latest}

missing() { echo "demo: $1 is missing. $2" >&2; exit 1; }
case "$(uname -s)" in
  Darwin) brew="brew install" ;;
  *) brew="install it with your package manager, e.g." ;;
esac
case "$(uname -m)" in
  arm64|aarch64) arch=arm64 qemu=qemu-system-aarch64 ;;
  x86_64|amd64) arch=amd64 qemu=qemu-system-x86_64 ;;
  *) echo "demo: unsupported host architecture $(uname -m)" >&2; exit 1 ;;
esac
command -v npm >/dev/null 2>&1 || missing npm "$brew node"
command -v "$qemu" >/dev/null 2>&1 || missing "$qemu" "$brew qemu"
[ -x "$BIN/oci2gondolin" ] || missing "$BIN/oci2gondolin" "Run make build first."

host=${GONDOLIN_HOST_DIR:-testdata/gondolin-host}
if [ ! -x "$host/node_modules/.bin/gondolin" ] || [ ! -x "$host/node_modules/node/bin/node" ]; then
  echo "[1/4] Installing the Gondolin CLI and Node.js 24 from npm into $host (Gondolin 0.12 needs Node >= 23.6)"
  (cd "$host" && npm ci --no-audit --no-fund --loglevel=error)
else
  echo "[1/4] The Gondolin CLI and Node.js 24 from npm are in $host"
fi
host=$(cd "$host" && pwd)
PATH="$host/node_modules/node/bin:$host/node_modules/.bin:$PATH"
export PATH

echo "[2/4] $ gondolin image pull alpine-base:latest"
gondolin image pull alpine-base:latest

echo "[3/4] $ $BIN/oci2gondolin --image $IMAGE --platform linux/$arch --mode assets --out $OUT"
"$BIN/oci2gondolin" --image "$IMAGE" --platform "linux/$arch" --mode assets --out "$OUT" >/dev/null

echo "[4/4] $ GONDOLIN_GUEST_DIR=$OUT gondolin exec -- ..."
GONDOLIN_GUEST_DIR=$OUT gondolin exec -- /bin/uname -a
GONDOLIN_GUEST_DIR=$OUT gondolin exec -- /bin/sh -c 'echo "hello from $(hostname), user $(id -un)"'
echo "The guest directory $OUT boots with: gondolin bash --image $OUT"
