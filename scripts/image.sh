#!/bin/sh
# Builds the docker2vm container image (container/Dockerfile) for
# linux/amd64 and linux/arm64 into IMAGE_OUT (default
# dist/image/docker2vm.oci.tar), an OCI archive: load it with
# `docker load`, or push it with `crane push` / `skopeo copy
# oci-archive:...`. It builds with `docker buildx` when there is one, else
# with buildctl (BUILDKIT_HOST, or --addr in BUILDCTL_FLAGS); BUILDER=buildctl
# chooses buildctl. The binaries are make dist's, stamped with VERSION.
set -eu
cd "$(dirname "$0")/.."
VERSION=${VERSION:-$(sh scripts/version.sh)}
OUT=${IMAGE_OUT:-dist/image/docker2vm.oci.tar}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
DIST=$ctx/bin VERSION=$VERSION PLATFORMS="linux/amd64 linux/arm64" sh scripts/dist.sh
rm -rf "$ctx/bin/man" "$ctx/bin/SHA256SUMS"
for ca in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/cert.pem; do
  if [ -f "$ca" ]; then
    cp "$ca" "$ctx/ca-certificates.crt"
    break
  fi
done
if [ ! -f "$ctx/ca-certificates.crt" ]; then
  echo "image: no CA certificate bundle found (install ca-certificates)" >&2
  exit 1
fi
printf 'root:x:0:0:root:/root:/sbin/nologin\ndocker2vm:x:65532:65532:docker2vm:/home/docker2vm:/sbin/nologin\n' > "$ctx/passwd"
printf 'root:x:0:\ndocker2vm:x:65532:\n' > "$ctx/group"
mkdir "$ctx/empty"
cp container/Dockerfile "$ctx/Dockerfile"
mkdir -p "$(dirname "$OUT")"
tmp=$OUT.tmp-$$
if [ "${BUILDER:-}" != buildctl ] && docker buildx version >/dev/null 2>&1; then
  docker buildx build --platform linux/amd64,linux/arm64 --build-arg "VERSION=$VERSION" \
    --output "type=oci,dest=$tmp" "$ctx"
else
  # shellcheck disable=SC2086 # BUILDCTL_FLAGS is a list of flags
  buildctl ${BUILDCTL_FLAGS:-} build --frontend dockerfile.v0 --local context="$ctx" --local dockerfile="$ctx" \
    --opt platform=linux/amd64,linux/arm64 --opt build-arg:VERSION="$VERSION" \
    --output "type=oci,dest=$tmp"
fi
mv "$tmp" "$OUT"
echo "image: docker2vm $VERSION for linux/amd64 and linux/arm64 in $OUT" >&2
