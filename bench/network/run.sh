#!/usr/bin/env bash
# Cluster network (issue 5): kube-proxy's Service programming in each proxy
# mode, cluster DNS throughput, and queries per lookup with Kubernetes'
# DNS defaults against Cloudless's. One node, in a network namespace.
#
#   sudo bench/network/run.sh
#   SERVICES=200 sudo bench/network/run.sh
#
# Writes bench/results/network-<date>-<machine>.md and .csv.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root: the node runs kube-proxy and containers" >&2; exit 1; }
work=$(mktemp -d /var/tmp/cl-bench-net-XXXXXX)
trap 'if [ $? = 0 ]; then rm -rf "$work"; else echo "logs kept in $work" >&2; fi' EXIT
echo "building cloudless and its helpers..." >&2
build/build.sh "$work/bin" >&2
go build -o "$work/netbench" ./bench/network
"$work/netbench" -work "$work" -bin "$work/bin" -services "${SERVICES:-1000}" -endpoints "${ENDPOINTS:-3}" \
  -machine "${MACHINE:-vm}" -out bench/results
