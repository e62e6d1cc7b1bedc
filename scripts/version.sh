#!/bin/sh
# Prints the version to stamp into binaries: the tag at HEAD (v1.2.3), else
# devel-<12-hex revision>, with -dirty when the work tree has changes;
# "devel" outside a git checkout. The format of cli.Version for a binary
# built from a checkout without a stamp (go build: its vcs.revision). Not
# Go's module pseudo-version (v0.0.0-DATE-REV), which only `go install
# module@version` records, and which cli.Version then reports as it is.
set -eu
cd "$(dirname "$0")/.."
if ! rev=$(git rev-parse --short=12 HEAD 2>/dev/null); then
  echo devel
  exit 0
fi
v=$(git describe --tags --exact-match HEAD 2>/dev/null || echo "devel-$rev")
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  v="$v-dirty"
fi
echo "$v"
