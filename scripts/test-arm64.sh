#!/bin/sh
# Runs the unit tests (-short) of every package as linux/arm64 test
# binaries under qemu-user (the emulator qemuuser.Path picks, or
# $QEMU_AARCH64; no binfmt_misc registration needed): the code paths of a
# 64-bit ARM host (Linux on Graviton, Ampere, Raspberry Pi; the same Go
# port as Apple Silicon) on this machine. Each binary runs in its
# package's directory, as go test does.
set -eu
cd "$(dirname "$0")/.."
GO=${GO:-go}
if [ -n "${QEMU_AARCH64:-}" ]; then
  QEMU=$QEMU_AARCH64
elif ! QEMU=$("$GO" run ./internal/testenv/cmd/qemuuser arm64); then
  printf 'test-arm64: %s\n(or set QEMU_AARCH64 to an emulator)\n' "$QEMU" >&2
  exit 1
fi
echo "test-arm64: $("$QEMU" --version | head -1) ($QEMU)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
fail=0
for pkg in $("$GO" list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{"\t"}}{{.Dir}}{{end}}' ./... | tr '\t' '|'); do
  path=${pkg%%|*} dir=${pkg#*|}
  bin="$tmp/$(echo "$path" | tr / _).test"
  CGO_ENABLED=0 GOOS=linux GOARCH=arm64 "$GO" test -c -o "$bin" "$path"
  start=$(date +%s)
  # A package's tests take well under a minute here: a hang fails in
  # minutes, with the test that hung named at the top of the output.
  if (cd "$dir" && "$QEMU" "$bin" -test.short -test.count=1 -test.timeout=5m >"$tmp/out" 2>&1); then
    echo "ok   $path (linux/arm64, $(($(date +%s) - start))s)"
  else
    echo "FAIL $path (linux/arm64)"
    if [ "$(wc -l <"$tmp/out")" -gt 120 ]; then
      head -40 "$tmp/out"
      echo "[...]"
      tail -60 "$tmp/out"
    else
      cat "$tmp/out"
    fi
    fail=1
  fi
done
exit $fail
