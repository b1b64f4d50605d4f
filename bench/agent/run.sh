#!/usr/bin/env bash
# Node agent (issue 4): a one-machine cluster with Cloudless's agent against
# the same control plane with upstream kubelet and containerd binaries.
#
#   sudo bench/agent/run.sh                 # 20 pods, 2 minutes idle
#   PODS=5 IDLE=20s sudo bench/agent/run.sh
#   ONLY_VOLUMES=1 VOLUMES=20 sudo bench/agent/run.sh   # local volumes only (issue 14)
#   ONLY_METRICS=1 PODS=10 IDLE=2m sudo bench/agent/run.sh   # metrics API only (issue 14)
#
# Writes bench/results/agent-<date>-<machine>.md and .csv, volumes-<date>-<machine>.md and metrics-<date>-<machine>.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root: the agent runs containers" >&2; exit 1; }
work=$(mktemp -d /var/tmp/cl-bench-agent-XXXXXX)
trap 'if [ $? = 0 ]; then rm -rf "$work"; else echo "logs kept in $work" >&2; fi' EXIT
echo "building cloudless, its helpers, and upstream kubelet, containerd and shim (pinned in go.mod)..." >&2
build/build.sh "$work/bin" >&2
k8s=$(go list -m -f '{{.Version}}' k8s.io/kubernetes); minor=${k8s#v1.}; minor=${minor%%.*}; v=k8s.io/component-base/version
go build -ldflags "-X $v.gitVersion=$k8s -X $v.gitMajor=1 -X $v.gitMinor=$minor" -o "$work/upstream/" k8s.io/kubernetes/cmd/kubelet
go build -o "$work/upstream/" github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2
# metrics-server as its project builds it: in its own module, on the
# Kubernetes modules it pins (ours need the workarounds in internal/metrics).
(cd "$(go list -m -f '{{.Dir}}' sigs.k8s.io/metrics-server)" && go build -o "$work/upstream/" ./cmd/metrics-server)
CGO_ENABLED=0 go build -o "$work/app" ./test/integration/testdata/app
go build -o "$work/agentbench" ./bench/agent
"$work/agentbench" -pack-app "$work/app" -app "$work/app.tar" 
"$work/agentbench" -work "$work" -bin "$work/bin" -upstream "$work/upstream" -app "$work/app.tar" \
  -pods "${PODS:-20}" -idle "${IDLE:-2m}" -volumes "${VOLUMES:-10}" -only-volumes="${ONLY_VOLUMES:-false}" \
  -only-metrics="${ONLY_METRICS:-false}" \
  -machine "${MACHINE:-vm}" -out bench/results
