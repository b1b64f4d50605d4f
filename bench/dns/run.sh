#!/usr/bin/env bash
# Cloudless's authoritative DNS against PowerDNS (issue 16): queries per
# second on a 10,000-record zone (dnsperf), and change to visible with
# the real `cloudless server`. Needs Debian's pdns-server,
# pdns-backend-sqlite3, sqlite3 and dnsperf; stops nothing it did not start.
#   sudo bench/dns/run.sh      → bench/results/dns-<date>-<machine>.md
set -euo pipefail
cd "$(dirname "$0")/../.."
for c in pdns_server pdnsutil sqlite3 dnsperf; do
  command -v $c >/dev/null || { echo "bench/dns: $c is missing: apt-get install pdns-server pdns-backend-sqlite3 sqlite3 dnsperf (then systemctl disable --now pdns)"; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
build/build.sh "$work/bin" >/dev/null
go run ./bench/dns -cloudless "$work/bin/cloudless" -machine "${MACHINE:-vm}" -out bench/results "$@"
