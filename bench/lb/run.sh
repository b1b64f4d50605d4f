#!/usr/bin/env bash
# Load balancer (issue 13): L2 failover time (kill the announcing node's
# agent and cut its link; time until a client on the LAN is served
# through another node), with Cloudless's failure detection and with
# memberlist's stock LAN timings (MetalLB's) as the baseline, in the same
# run; and Service create -> first successful request. Two nodes and a
# client in network namespaces on one bridge; nothing leaves the machine.
#
#   sudo bench/lb/run.sh
#   FAILOVERS=30 sudo bench/lb/run.sh
#
# Writes bench/results/lb-<date>-<machine>.md and .csv.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root: the nodes run kube-proxy, containers and network namespaces" >&2; exit 1; }
command -v arping >/dev/null || { echo "arping missing: apt-get install iputils-arping" >&2; exit 1; }
work=$(mktemp -d /var/tmp/cl-bench-lb-XXXXXX)
trap 'if [ $? = 0 ]; then rm -rf "$work"; else echo "logs kept in $work" >&2; fi' EXIT
echo "building cloudless and its helpers..." >&2
build/build.sh "$work/bin" >&2
go build -o "$work/lbbench" ./bench/lb
CGO_ENABLED=0 go build -o "$work/app" ./test/integration/testdata/app
"$work/lbbench" -work "$work" -bin "$work/bin" -app "$work/app" -failovers "${FAILOVERS:-20}" \
  -creates "${CREATES:-10}" -machine "${MACHINE:-vm}" -out bench/results
