#!/usr/bin/env bash
# cloudless lint against kube-score on the pitfall corpus (issue 6).
#   bench/lint/run.sh      → bench/results/lint-<date>-<machine>.md
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
go build -o "$work/cloudless" ./cmd/cloudless
(cd bench/lint/peers && go build -o "$work/kube-score" github.com/zegl/kube-score/cmd/kube-score)
go run ./bench/lint -cloudless "$work/cloudless" -kube-score "$work/kube-score" -machine "${MACHINE:-vm}" -out bench/results
ln -sf "lint-$(date -u +%F)-${MACHINE:-vm}.md" bench/results/lint.md   # the latest, under the name issue 6 gives
