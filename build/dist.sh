#!/usr/bin/env bash
# The release archive (make dist): cloudless and its helpers built with
# -trimpath and -ldflags '-s -w' (no paths of the build machine, no
# symbol table or DWARF), in cloudless-<version>-linux-<arch>/ with the
# README, packed as .tar.zst (zstd -19; .tar.xz where zstd is missing)
# into ${DIST_DIR:-dist}/.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${DIST_DIR:-dist}")
version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
arch=$(go env GOARCH)
name=cloudless-$version-linux-$arch
stage=$(mktemp -d); trap 'rm -rf "$stage"' EXIT
RELEASE=1 build/build.sh "$stage/$name"
cp README.md "$stage/$name/"
mkdir -p "$out"
if command -v zstd >/dev/null; then
  tar -C "$stage" -cf - "$name" | zstd -q -19 -T0 -o "$out/$name.tar.zst" -f
  echo "$out/$name.tar.zst"
else
  tar -C "$stage" -cf - "$name" | xz -9 -T0 > "$out/$name.tar.xz"
  echo "$out/$name.tar.xz"
fi
