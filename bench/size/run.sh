#!/usr/bin/env bash
# Database size under sustained churn (issue 2): runs the workload against
# etcd (Debian's etcd-server), our embedded engine and our PostgreSQL engine
# at the same time, each on its own loop-mounted ext4, and records the size
# of each store's files every minute.
#
#   sudo bench/size/run.sh            # 30 minutes
#   DURATION=5m sudo bench/size/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-30m}
work=$(mktemp -d /var/tmp/cl-size-XXXXXX); chmod 755 "$work"
pids=(); devs=(); mnts=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -d "$work/pg/data" ] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1 || true
  for m in "${mnts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  for d in "${devs[@]}"; do losetup -d "$d" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
mountfs() { # name -> mount point
  truncate -s 4G "$work/$1.img"; mkfs.ext4 -q "$work/$1.img"
  local dev; dev=$(losetup --find --show "$work/$1.img"); devs+=("$dev")
  mkdir -p "$work/$1"; mount "$dev" "$work/$1"; mnts+=("$work/$1")
}
wait_sock() { for _ in $(seq 300); do [ -S "$1" ] && return 0; sleep 0.1; done; echo "no socket $1" >&2; return 1; }

go build -o "$work/cloudless" ./cmd/cloudless
go build -o "$work/size" ./bench/size
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

stores=()
if command -v etcd >/dev/null; then
  mountfs etcd
  etcd --data-dir "$work/etcd/data" --listen-client-urls http://127.0.0.1:23790 --advertise-client-urls http://127.0.0.1:23790 \
    --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
    --initial-cluster default=http://127.0.0.1:23800 >"$work/etcd.log" 2>&1 &
  pids+=($!)
  stores+=(-store "etcd=http://127.0.0.1:23790:$work/etcd")
fi
mountfs pebble
"$work/cloudless" datastore --data-dir "$work/pebble" --listen-socket "$work/pebble.sock" --log-level warn 2>"$work/pebble.log" &
pids+=($!)
stores+=(-store "cloudless-embedded=unix://$work/pebble.sock:$work/pebble")
mountfs pg
mkdir -p "$work/pg/data" "$work/pgsock"; chown postgres "$work/pg/data" "$work/pgsock"
runuser -u postgres -- "$PGBIN/initdb" -D "$work/pg/data" -U postgres -A trust >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$work/pg/data" -l "$work/pg/data/server.log" -o "-k $work/pgsock -p 29998 -c listen_addresses=''" -w start >/dev/null
"$work/cloudless" datastore --data-dir "$work/pgds" --listen-socket "$work/pgds.sock" --log-level warn \
  --datastore-endpoint "postgres://postgres@/postgres?host=$work/pgsock&port=29998&sslmode=disable" 2>"$work/pgds.log" &
pids+=($!)
stores+=(-store "cloudless-postgres=unix://$work/pgds.sock:$work/pg/data")
wait_sock "$work/pebble.sock"; wait_sock "$work/pgds.sock"

"$work/size" -duration "$DURATION" -out "$work/size.csv" "${stores[@]}"

date=$(date -u +%F); host=$(hostname)
mkdir -p bench/results
out=bench/results/size-$date-$host.md
{
  echo "# Datastore size under churn, $date, $host"
  echo
  echo "Machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB, kernel $(uname -r). Duration $DURATION."
  echo "Workload: 100 Lease renewals every 10 s, 5 ConfigMap creates and 5 deletes a second, compaction every 5 min."
  echo "Size: bytes of the store's files (etcd data dir, our data dir, PostgreSQL's whole data dir)."
  echo
  names=$(cut -d, -f1 "$work/size.csv" | tail -n +2 | sort -u | paste -sd' ')
  echo "Each cell: MiB of files on disk / MiB the store reports as its database size (Maintenance Status db_size)."
  echo
  echo "| minute | $(echo $names | sed 's/ / | /g') |"
  echo "|---|$(for n in $names; do printf -- '---|'; done)"
  awk -F, -v names="$names" 'NR>1 {m=int($2/60); v[m","$1]=sprintf("%.1f / %.1f", $3/1048576, $4/1048576); if (m>mx) mx=m}
    END {n=split(names, a, " "); for (i=0;i<=mx;i++) {line="| " i; for (j=1;j<=n;j++) line=line " | " v[i","a[j]]; print line " |"}}' "$work/size.csv"
} > "$out"
cp "$work/size.csv" "bench/results/size-$date-$host.csv"
echo "wrote $out"
