#!/usr/bin/env bash
# The upstream Kubernetes conformance suite (e2e.test from the pinned
# k8s.io/kubernetes module) against a two-node Cloudless cluster on this
# machine. One command, as root:
#
#   sudo test/conformance/run.sh                       # everything: parallel pass, then serial pass
#   FOCUS='HostPort|DNS' SERIAL=0 test/conformance/run.sh   # a subset
#
# Settings (environment): FOCUS, SKIP (ginkgo regexps on spec names),
# PROCS (parallel processes, default 4), SERIAL (0: skip the [Serial] /
# [Disruptive] pass), PARALLEL (0: skip the parallel pass), MACHINE (result file name, default vm),
# CONFORMANCE_NAME (result file prefix, default conformance),
# CONFORMANCE_WORK (scratch dir, default a new one under /var/tmp),
# CONFORMANCE_RESULTS (where results go, default bench/results),
# CONFORMANCE_NODES (nodens numbers of the two nodes, default "31 32"),
# KEEP=1 (keep the scratch dir). Results: bench/results/<name>-<date>-<machine>.md
# and the junit files next to it. README.md explains the rest.
set -euo pipefail
# One compound command, read whole before it runs: editing this file
# during a run cannot change what the run does next.
{
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
say() { echo "conformance: $*" >&2; }
fail() { echo "conformance: $*" >&2; exit 2; }

# Prerequisites, before anything starts.
[ "$(id -u)" = 0 ] || fail "run as root: the nodes run kubelets, containerd and network namespaces"
command -v go >/dev/null || fail "no go in PATH: install Go (see the README's quickstart) or add /usr/local/go/bin to PATH"
for p in busybox-static:/usr/bin/busybox bind9-dnsutils:/usr/bin/dig netcat-openbsd:/usr/bin/nc curl:/usr/bin/curl nginx:/usr/sbin/nginx; do
  [ -e "${p#*:}" ] || fail "${p#*:} is missing: apt-get install ${p%%:*} (the test images are built from it)"
done
work=${CONFORMANCE_WORK:-$(mktemp -d /var/tmp/cl-conformance-XXXXXX)}
mkdir -p "$work"
free=$(df -Pk "$work" | awk 'NR==2 {print int($4/1048576)}')
[ "$free" -ge 10 ] || fail "$work has ${free} GiB free, the run needs 10 GiB: free some space or set CONFORMANCE_WORK"
if [ "${KEEP:-0}" != 1 ]; then
  trap 'rc=$?; if [ $rc = 0 ]; then rm -rf "$work"; else say "logs kept in $work (logs/, reports/)"; fi' EXIT
fi
say "checking Go modules"
go mod download || fail "Go modules of test/conformance cannot be fetched: check GOPROXY (the module proxy must be reachable)"

# The tree the binaries are built from, for the report.
CONFORMANCE_COMMIT=$(git -C "$root" rev-parse --short HEAD)
[ -z "$(git -C "$root" status --porcelain --untracked-files=no)" ] || CONFORMANCE_COMMIT="$CONFORMANCE_COMMIT with uncommitted changes"
export CONFORMANCE_COMMIT
say "building cloudless, e2e.test, ginkgo and the images' binaries (minutes on a cold cache)"
bin=$work/bin
mkdir -p "$bin"
flock /tmp/cloudless-build.lock sh -c "
  set -e
  '$root/build/build.sh' '$bin' >&2
  go test -c -o '$bin/e2e.test' k8s.io/kubernetes/test/e2e
  go build -o '$bin/ginkgo' github.com/onsi/ginkgo/v2/ginkgo
  CGO_ENABLED=0 go build -o '$bin/agnhost' k8s.io/kubernetes/test/images/agnhost
  CGO_ENABLED=0 go build -o '$bin/nnp' k8s.io/kubernetes/test/images/nonewprivs
  CGO_ENABLED=0 go build -o '$bin/sample-apiserver' k8s.io/sample-apiserver
  CGO_ENABLED=0 go build -o '$bin/etcd' go.etcd.io/etcd/server/v3
  go test -c -o '$bin/conformance.test' .
"

say "running (images, cluster, suite); progress in $work/reports/*/ginkgo.log"
# In the background so that Ctrl-C or a TERM to this script reaches the
# runner, which ends the suite, writes the report and stops the nodes.
CONFORMANCE_BIN=$bin CONFORMANCE_WORK=$work CONFORMANCE_RESULTS=${CONFORMANCE_RESULTS:-$root/bench/results} \
  "$bin/conformance.test" -test.count=1 -test.timeout=6h -test.v -test.run 'TestConformance$' &
runner=$!
trap 'say "stopping: the runner ends the suite and cleans up"; kill -INT $runner 2>/dev/null' INT TERM
rc=0
while :; do
  wait $runner && rc=0 || rc=$?
  kill -0 $runner 2>/dev/null || break   # wait returned for a signal, not an exit
done
exit $rc
}
