#!/usr/bin/env bash
# Size of what a machine needs to run Cloudless (issue 15): the release
# build (make dist: -trimpath, -s -w) of cloudless and its helpers (runc,
# pause, CNI plugins), against the development build (build/build.sh, as
# the tests use it) and the targets: everything on disk <= 200 MB, the
# archive <= 70 MB (k3s's release binary is about 70 MB).
#
#   bench/binary/run.sh       → bench/results/binary-<date>-<machine>.md, appended to binary-history.csv
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
machine=${MACHINE:-vm}; date=$(date -u +%F)
build/build.sh "$work/dev" >/dev/null
DIST_DIR="$work/dist" build/dist.sh >/dev/null
archive=$(ls "$work"/dist/cloudless-*.tar.*)
mib() { awk -v b="$1" 'BEGIN{printf "%.1f", b/1048576}'; }
size() { stat -c %s "$1"; }
total() { du -sb --apparent-size "$1" | cut -f1; }
linkage() { if file -b "$1" | grep -q "statically linked"; then echo static; else echo dynamic; fi; }
rel=$(mktemp -d); tar -xf "$archive" -C "$rel"; relbin=$(dirname "$(find "$rel" -name cloudless -type f | head -1)")
out=bench/results/binary-$date-$machine.md
{
  echo "# Binary size, $date, $machine"
  echo
  echo "\`bench/binary/run.sh\` at $(git rev-parse --short HEAD); Go $(go env GOVERSION)."
  echo
  echo "| file | development build (build/build.sh) | release build (make dist) | release linkage |"
  echo "|---|---|---|---|"
  for f in cloudless runc pause cni/bridge cni/host-local cni/loopback cni/portmap; do
    echo "| $f | $(mib "$(size "$work/dev/$f")") MiB | $(mib "$(size "$relbin/$f")") MiB | $(linkage "$relbin/$f") |"
  done
  echo "| **everything on disk** | $(mib "$(total "$work/dev")") MiB | **$(mib "$(total "$relbin")") MiB** (target ≤ 200) | |"
  echo "| **archive** ($(basename "$archive")) | | **$(mib "$(size "$archive")") MiB** (target ≤ 70) | |"
  echo
  echo "Release / development, everything on disk: $(awk -v a="$(total "$relbin")" -v b="$(total "$work/dev")" 'BEGIN{printf "%.2f", a/b}')×."
  echo "Peer: k3s ships its release binary at about 70 MB (its own figure; not measured here, no download)."
} > "$out"
hist=bench/results/binary-history.csv
[ -f "$hist" ] || echo "date,commit,dev_total_bytes,release_total_bytes,archive_bytes,cloudless_release_bytes" > "$hist"
echo "$date,$(git rev-parse --short HEAD),$(total "$work/dev"),$(total "$relbin"),$(size "$archive"),$(size "$relbin/cloudless")" >> "$hist"
rm -rf "$rel"
cat "$out"
