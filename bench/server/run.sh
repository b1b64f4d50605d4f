#!/usr/bin/env bash
# Server start time and idle footprint (issue 3): `cloudless server` against
# etcd + kube-apiserver + kube-controller-manager + kube-scheduler run as
# separate processes with the same flags and certificates.
#
#   sudo bench/server/run.sh               # 3 runs, 5 minutes idle each
#   RUNS=1 IDLE=30s sudo bench/server/run.sh
#
# Writes bench/results/server-<date>-<machine>.md and .csv.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root: cloudless server needs it" >&2; exit 1; }
command -v etcd >/dev/null || { echo "needs etcd: apt-get install etcd-server" >&2; exit 1; }
work=$(mktemp -d /var/tmp/cl-bench-server-XXXXXX)
trap 'if [ $? = 0 ]; then rm -rf "$work"; else echo "logs kept in $work" >&2; fi' EXIT
echo "building cloudless and upstream kube-apiserver, kube-controller-manager, kube-scheduler (pinned in go.mod)..." >&2
go build -o "$work/bin/" ./cmd/cloudless k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler ./bench/server
"$work/bin/server" -work "$work" -cloudless "$work/bin/cloudless" -kube-apiserver "$work/bin/kube-apiserver" \
  -kube-controller-manager "$work/bin/kube-controller-manager" -kube-scheduler "$work/bin/kube-scheduler" \
  -runs "${RUNS:-3}" -idle "${IDLE:-5m}" -machine "${MACHINE:-vm}" -out bench/results
