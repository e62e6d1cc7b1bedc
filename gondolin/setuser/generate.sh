#!/bin/sh
# Assembles asm/ARCH.s into docker2vm-setuser-ARCH, a minimal static ELF
# executable (stripped, no build id, one segment), for x86_64 and aarch64.
# `go generate` runs it; the results are committed and embedded, so building
# docker2vm needs no assembler.
#
#   sh generate.sh [OUTDIR]     (default: this directory)
#
# Needs GNU binutils for both targets: the target-prefixed tools
# (x86_64-linux-gnu-as, aarch64-linux-gnu-as, ... on Debian: packages
# binutils and binutils-aarch64-linux-gnu), or the native as and ld on a
# host of that architecture.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# tool ARCH NAME: the binutils program NAME that targets ARCH.
tool() {
	if command -v "$1-linux-gnu-$2" >/dev/null 2>&1; then
		echo "$1-linux-gnu-$2"
	elif [ "$(uname -m)" = "$1" ] && command -v "$2" >/dev/null 2>&1; then
		echo "$2"
	else
		echo "generate.sh: no $1-linux-gnu-$2 (Debian: apt-get install binutils-$(echo "$1" | tr _ -)-linux-gnu)" >&2
		exit 1
	fi
}

for arch in x86_64 aarch64; do
	as=$(tool "$arch" as)
	ld=$(tool "$arch" ld)
	asflags=
	if [ "$arch" = x86_64 ]; then
		asflags=-mx86-used-note=no # no .note.gnu.property
	fi
	# shellcheck disable=SC2086 # asflags is one word or none
	"$as" $asflags -o "$tmp/$arch.o" "$here/asm/$arch.s"
	"$ld" -static -nostdlib -n -s --build-id=none -z noexecstack -e _start \
		-o "$tmp/docker2vm-setuser-$arch" "$tmp/$arch.o"
	cp "$tmp/docker2vm-setuser-$arch" "$out/docker2vm-setuser-$arch"
done
