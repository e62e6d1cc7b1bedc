#!/bin/sh
# Writes docker2vm's npm packages into NPM_OUT (default dist/npm): one per
# host, @docker2vm/<os>-<cpu>, holding that host's three static binaries,
# and the main package, docker2vm (the launchers and the JavaScript API),
# each as a directory and as the `npm pack` tarball to publish. The version
# is the binaries' stamp (scripts/version.sh, what --version prints), as
# npm spells versions: v1.2.3 is 1.2.3, devel-<rev>[-dirty] is
# 0.0.0-devel-<rev>[-dirty]. PLATFORMS narrows the hosts (GOOS/GOARCH).
set -eu
cd "$(dirname "$0")/.."
GO=${GO:-go}
OUT=${NPM_OUT:-dist/npm}
VERSION=${VERSION:-$(sh scripts/version.sh)}
PLATFORMS=${PLATFORMS:-"linux/amd64 linux/arm64 darwin/amd64 darwin/arm64"}
case $VERSION in
  v[0-9]*) NPMV=${VERSION#v} ;;
  *) NPMV=0.0.0-$VERSION ;;
esac
bins=$(mktemp -d)
trap 'rm -rf "$bins"' EXIT
DIST=$bins VERSION=$VERSION PLATFORMS=$PLATFORMS sh scripts/dist.sh
rm -rf "$OUT"
"$GO" run ./internal/tools/npmpkg -out "$OUT" -src npm/docker2vm -bins "$bins" -version "$NPMV" -platforms "$PLATFORMS"
abs=$(cd "$OUT" && pwd)
for d in "$abs"/docker2vm "$abs"/@docker2vm/*; do
  (cd "$abs" && npm pack --silent --pack-destination "$abs" "$d" >/dev/null)
done
echo "npm: the packages of $NPMV in $OUT:" >&2
for f in "$abs"/*.tgz; do echo "  $f" >&2; done
