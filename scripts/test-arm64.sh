#!/bin/sh
# Runs the unit tests (-short) of every package as linux/arm64 test
# binaries under qemu-user (qemu-aarch64-static, from Debian's
# qemu-user-static; no binfmt_misc registration needed): the code paths of
# a 64-bit ARM host (Linux on Graviton, Ampere, Raspberry Pi; the same Go
# port as Apple Silicon) on this machine. Each binary runs in its
# package's directory, as go test does.
set -eu
cd "$(dirname "$0")/.."
GO=${GO:-go}
QEMU=${QEMU_AARCH64:-qemu-aarch64-static}
if ! command -v "$QEMU" >/dev/null 2>&1; then
  echo "test-arm64: $QEMU not found: install qemu-user-static (Debian/Ubuntu), or set QEMU_AARCH64" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
fail=0
for pkg in $("$GO" list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{"\t"}}{{.Dir}}{{end}}' ./... | tr '\t' '|'); do
  path=${pkg%%|*} dir=${pkg#*|}
  bin="$tmp/$(echo "$path" | tr / _).test"
  CGO_ENABLED=0 GOOS=linux GOARCH=arm64 "$GO" test -c -o "$bin" "$path"
  start=$(date +%s)
  if (cd "$dir" && "$QEMU" "$bin" -test.short -test.count=1 -test.timeout=20m >"$tmp/out" 2>&1); then
    echo "ok   $path (linux/arm64, $(($(date +%s) - start))s)"
  else
    echo "FAIL $path (linux/arm64)"
    tail -50 "$tmp/out"
    fail=1
  fi
done
exit $fail
