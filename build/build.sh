#!/usr/bin/env bash
# Builds cloudless and the helpers the node agent runs next to it into DIR
# (default bin/): cloudless, pause, runc (cgo, libseccomp linked in) and
# cni/{bridge,host-local,loopback,portmap}, all statically linked.
# Versions are pinned in go.mod and build/helpers/go.mod; nothing is
# downloaded but Go modules.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-bin}")
mkdir -p "$out/cni"
GO=${GO:-go}
# The build configuration (static, pure Go; build tags) has one owner.
set -a; . build/go.env; set +a
# Every build drops the symbol table and DWARF (-s -w: a third of the
# size; panics keep their stack traces). RELEASE=1 (build/dist.sh) also
# drops the build machine's paths (-trimpath), which changes every
# package's build ID: the tests' build leaves it off, so it shares the Go
# build cache with `go test`.
trim=(); [ "${RELEASE:-}" = 1 ] && trim=(-trimpath)
# Upstream components report the Kubernetes version they are built from.
k8s=$($GO list -m -f '{{.Version}}' k8s.io/kubernetes); minor=${k8s#v1.}; minor=${minor%%.*}
v=k8s.io/component-base/version
$GO build "${trim[@]}" -ldflags "-s -w -X $v.gitVersion=$k8s -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean" -o "$out/cloudless" ./cmd/cloudless
CGO_ENABLED=0 $GO build "${trim[@]}" -ldflags "-s -w" -o "$out/pause" ./cmd/pause
cd build/helpers
runc_version=$($GO list -m -f '{{.Version}}' github.com/opencontainers/runc)
CGO_ENABLED=1 $GO build "${trim[@]}" -tags "seccomp urfave_cli_no_docs netgo osusergo" \
  -ldflags "-s -w -extldflags -static -X main.version=${runc_version#v}" -o "$out/runc" github.com/opencontainers/runc
CGO_ENABLED=0 $GO build "${trim[@]}" -ldflags "-s -w" -o "$out/cni/" \
  github.com/containernetworking/plugins/plugins/main/bridge \
  github.com/containernetworking/plugins/plugins/main/loopback \
  github.com/containernetworking/plugins/plugins/ipam/host-local \
  github.com/containernetworking/plugins/plugins/meta/portmap
