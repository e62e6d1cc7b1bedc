#!/usr/bin/env bash
# Builds BuildKit's daemon and client (buildkitd, buildctl) at the version
# this module pins, for the integration tests, and prints the directory that
# holds them: $DOCKER2VM_TEST_CACHE (else $XDG_CACHE_HOME/docker2vm-test, else
# ~/.cache/docker2vm-test)/buildkit-<version>/. Nothing is built when both
# binaries are already there. Needs Go and the module proxy (or a warm module
# cache); about 2 minutes on 2 cores the first time.
#
# `go install github.com/moby/buildkit/cmd/buildkitd@VERSION` is refused
# because buildkit's go.mod has exclude directives, so the binaries are built
# from inside this module, which requires buildkit (tools.go).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

version=$(awk '$1 == "github.com/moby/buildkit" {print $2; exit} $1 == "require" && $2 == "github.com/moby/buildkit" {print $3; exit}' go.mod)
if [ -z "$version" ]; then
  echo "build.sh: github.com/moby/buildkit not found in $here/go.mod" >&2
  exit 1
fi

if [ -n "${DOCKER2VM_TEST_CACHE:-}" ]; then
  cache=$DOCKER2VM_TEST_CACHE
elif [ -n "${XDG_CACHE_HOME:-}" ]; then
  cache=$XDG_CACHE_HOME/docker2vm-test
else
  cache=$HOME/.cache/docker2vm-test
fi
dest=$cache/buildkit-$version

if [ -x "$dest/buildkitd" ] && [ -x "$dest/buildctl" ]; then
  echo "$dest"
  exit 0
fi

mkdir -p "$cache"
# One build at a time (test packages run in parallel); the loser of the race
# finds the binaries in place once it gets the lock.
exec 9>"$cache/.buildkit-$version.lock"
flock 9
if [ -x "$dest/buildkitd" ] && [ -x "$dest/buildctl" ]; then
  echo "$dest"
  exit 0
fi

tmp=$(mktemp -d "$cache/.buildkit-$version.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
pkg=github.com/moby/buildkit
echo "build.sh: building buildkitd and buildctl $version into $dest" >&2
start=$(date +%s)
# As upstream's Dockerfile builds them: static, with the seccomp profile.
CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath \
  -tags "osusergo netgo static_build seccomp" \
  -ldflags "-s -w -X $pkg/version.Version=$version -X $pkg/version.Revision=$version -X $pkg/version.Package=$pkg" \
  -o "$tmp/" "$pkg/cmd/buildkitd" "$pkg/cmd/buildctl"
mkdir -p "$dest"
mv -f "$tmp/buildctl" "$dest/buildctl"
mv -f "$tmp/buildkitd" "$dest/buildkitd"
echo "build.sh: built in $(( $(date +%s) - start ))s" >&2
echo "$dest"
