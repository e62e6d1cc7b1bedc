#!/bin/sh
# Cross-compiles the commands for every supported host into DIST (default
# dist/): DIST/<os>_<arch>/<command>, static (CGO_ENABLED=0), stamped with
# VERSION, their man pages in DIST/man/, and DIST/SHA256SUMS over all of
# them. Builds are reproducible: the same source, Go version and VERSION give
# the same bytes (the man pages are dated by the commit, or
# SOURCE_DATE_EPOCH).
set -eu
cd "$(dirname "$0")/.."
GO=${GO:-go}
DIST=${DIST:-dist}
VERSION=${VERSION:-$(sh scripts/version.sh)}
PLATFORMS=${PLATFORMS:-"linux/amd64 linux/arm64 darwin/amd64 darwin/arm64"}
LDFLAGS="-s -w -X github.com/docker2vm/docker2vm/internal/cli.stamped=$VERSION"

rm -rf "$DIST"
mkdir -p "$DIST"
for p in $PLATFORMS; do
  os=${p%/*} arch=${p#*/}
  echo "dist: $os/$arch" >&2
  CGO_ENABLED=0 GOOS=$os GOARCH=$arch "$GO" build -trimpath -ldflags "$LDFLAGS" -o "$DIST/${os}_$arch/" ./cmd/...
done
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
export SOURCE_DATE_EPOCH
echo "dist: man pages" >&2
"$GO" run -ldflags "-X github.com/docker2vm/docker2vm/internal/cli.stamped=$VERSION" ./internal/tools/genman -out "$DIST/man" >/dev/null
cd "$DIST"
if command -v sha256sum >/dev/null 2>&1; then
  find . -type f ! -name SHA256SUMS | sed 's|^\./||' | LC_ALL=C sort | xargs sha256sum > SHA256SUMS
else
  find . -type f ! -name SHA256SUMS | sed 's|^\./||' | LC_ALL=C sort | xargs shasum -a 256 > SHA256SUMS
fi
echo "dist: $(wc -l < SHA256SUMS) files (binaries and man pages) of $VERSION in $DIST" >&2
