#!/usr/bin/env bash
# Datastore benchmark: etcd 3.4, kine v0.17.5 on SQLite and PostgreSQL, and
# Cloudless's embedded and PostgreSQL engines under one apiserver-shaped
# workload, each store alone on its own fresh loop-mounted ext4 file system.
#
#   sudo bench/datastore/run.sh            # full run: 300 s per store
#   sudo QUICK=1 bench/datastore/run.sh    # 30 s per store, compactor every 10 s
#
# Environment:
#   DURATION=300          timed phase per store, seconds (QUICK=1: 30)
#   COMPACT_INTERVAL=60   apiserver compactor interval, seconds (QUICK=1: 10)
#   STORES="etcd kine-sqlite kine-postgres cloudless-embedded cloudless-postgres"
#   LIST_OBJECTS=10000    pods created for the list measurement
#   CLOUDLESS=bin/cloudless  the binary under test (built if absent)
#   RESULTS_DIR=bench/results
#
# Writes RESULTS_DIR/datastore-<date>-<host>.md, .png and .csv. See README.md.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  DURATION=${DURATION:-30}
  COMPACT_INTERVAL=${COMPACT_INTERVAL:-10}
fi
DURATION=${DURATION:-300}
COMPACT_INTERVAL=${COMPACT_INTERVAL:-60}
STORES=${STORES:-"etcd kine-sqlite kine-postgres cloudless-embedded cloudless-postgres"}
LIST_OBJECTS=${LIST_OBJECTS:-10000}
CLOUDLESS=${CLOUDLESS:-$ROOT/bin/cloudless}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/bench/results}
LOOP_SIZE=${LOOP_SIZE:-2G}
START_TIMEOUT=${START_TIMEOUT:-60}

log() { printf '%s bench: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (loop devices and mounts): sudo $0"
case "$DURATION" in '' | *[!0-9]*) die "DURATION=$DURATION is not a number of seconds" ;; esac
case "$COMPACT_INTERVAL" in '' | *[!0-9]*) die "COMPACT_INTERVAL=$COMPACT_INTERVAL is not a number of seconds" ;; esac
for s in $STORES; do
  case "$s" in etcd | kine-sqlite | kine-postgres | cloudless-embedded | cloudless-postgres) ;;
  *) die "unknown store $s" ;;
  esac
done
wants() { case " $STORES " in *" $1 "*) return 0 ;; *) return 1 ;; esac }
wants_pg() { wants kine-postgres || wants cloudless-postgres; }

DATE=$(date +%F)
HOST=$(hostname -s 2>/dev/null || uname -n)
OUT="$RESULTS_DIR/datastore-$DATE-$HOST"
STATE="$HERE/.work"            # git-ignored: built binaries and logs
BIN="$STATE/bin"
LOGS="$STATE/logs/$DATE-$(date +%H%M%S)"
mkdir -p "$BIN" "$LOGS" "$RESULTS_DIR"

# ---------------------------------------------------------------- cleanup
# Everything this script starts or sets up is recorded here, and the EXIT
# trap undoes it all, on success, failure or Ctrl-C.
WORK=""
PIDS=()     # processes we started
PGDATAS=()  # PostgreSQL clusters we started (the postmaster is pg_ctl's child)
MOUNTS=()
LOOPS=()
CHILD=""    # the foreground job (see run_fg)

stop_pid() { # PID [timeout seconds]: TERM, wait up to the timeout, then KILL
  local pid=$1 t=${2:-20} i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < t * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1 # polling for the process to exit
  done
  log "pid $pid did not exit on TERM within ${t}s; killing"
  kill -KILL "$pid" 2>/dev/null || true
}

stop_pg() { # DATADIR
  local d=$1 pid
  [ -f "$d/postmaster.pid" ] || return 0
  pid=$(head -1 "$d/postmaster.pid" 2>/dev/null || true)
  (cd / && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$d" stop -m fast -w -t 30 >/dev/null 2>&1) ||
    { [ -n "$pid" ] && stop_pid "$pid" 5; }
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  [ -n "$CHILD" ] && stop_pid "$CHILD" 5
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}" 10; done
  for ((i = ${#PGDATAS[@]} - 1; i >= 0; i--)); do stop_pg "${PGDATAS[i]}"; done
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    mountpoint -q "${MOUNTS[i]}" && { umount "${MOUNTS[i]}" || umount -l "${MOUNTS[i]}"; }
  done
  for ((i = ${#LOOPS[@]} - 1; i >= 0; i--)); do
    losetup "${LOOPS[i]}" >/dev/null 2>&1 && losetup -d "${LOOPS[i]}"
  done
  [ -n "$WORK" ] && rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT
trap 'log terminated; exit 143' TERM

# run_fg LOG CMD...: run a long command as a background job, its stderr
# appended to LOG, and wait for it, so that Ctrl-C and TERM reach the traps
# at once rather than after it ends.
run_fg() {
  local log=$1
  shift
  "$@" 2>>"$log" &
  CHILD=$!
  local rc=0
  wait "$CHILD" || rc=$?
  CHILD=""
  return "$rc"
}

remove() { # ARRAY VALUE: drop VALUE from the named array
  local -n arr=$1
  local keep=() v
  for v in "${arr[@]}"; do [ "$v" = "$2" ] || keep+=("$v"); done
  arr=("${keep[@]}")
}

# ------------------------------------------------------------ prerequisites
need_pkgs=()
[ -x /usr/bin/etcd ] || ! wants etcd || need_pkgs+=(etcd-server)
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if wants_pg && [ -z "$PGBIN" ]; then need_pkgs+=(postgresql); fi
command -v mkfs.ext4 >/dev/null || need_pkgs+=(e2fsprogs)
command -v ss >/dev/null || need_pkgs+=(iproute2)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
fi
# Debian's packages start their own services where there is an init; ours
# use other ports and directories, so they can coexist, but none is needed.
command -v go >/dev/null || die "go not found (looked in PATH and /usr/local/go/bin)"

log "building the workload driver"
(cd "$HERE/load" && nice go build -o "$BIN/load" .) || die "building bench/datastore/load failed"
if wants kine-sqlite || wants kine-postgres; then
  log "building kine (first build takes a few minutes)"
  (cd "$HERE/kine" && nice go build -o "$BIN/kine" .) || die "building bench/datastore/kine failed"
fi
CLOUDLESS_ERR=""
if wants cloudless-embedded || wants cloudless-postgres; then
  if [ ! -x "$CLOUDLESS" ]; then
    log "building $CLOUDLESS"
    if ! (cd "$ROOT" && nice go build -o "$CLOUDLESS" ./cmd/cloudless) >"$LOGS/cloudless-build.log" 2>&1; then
      CLOUDLESS_ERR="go build ./cmd/cloudless failed:
$(tail -n 20 "$LOGS/cloudless-build.log")"
      log "building cloudless failed; its stores will be reported as failed to start"
    fi
  fi
fi

WORK=$(mktemp -d /var/tmp/cloudless-bench.XXXXXX)
chmod 755 "$WORK" # PostgreSQL runs as postgres and must reach its directories
RES="$WORK/results"
mkdir -p "$RES" "$WORK/mnt"

free_port() { # first TCP port from $1 up that nothing listens on
  local p=$1
  while [ -n "$(ss -Hltn "sport = :$p" 2>/dev/null)" ]; do p=$((p + 1)); done
  echo "$p"
}

# mkloop NAME: a fresh LOOP_SIZE ext4 file system at $MNT on $LOOPDEV.
# Inode tables and journal are initialised by mkfs, not lazily after mount,
# so no background writes of ext4's own land in the measurement.
mkloop() {
  local name=$1 img="$WORK/$1.img"
  truncate -s "$LOOP_SIZE" "$img" || return 1
  LOOPDEV=$(losetup --find --show "$img") || { FAIL_DETAIL="losetup failed"; return 1; }
  LOOPS+=("$LOOPDEV")
  mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0 "$LOOPDEV" || { FAIL_DETAIL="mkfs.ext4 failed"; return 1; }
  MNT="$WORK/mnt/$name"
  mkdir -p "$MNT"
  mount "$LOOPDEV" "$MNT" || { FAIL_DETAIL="mount failed"; return 1; }
  MOUNTS+=("$MNT")
}

rmloop() { # MNT LOOPDEV
  umount "$1" || umount -l "$1"
  remove MOUNTS "$1"
  losetup -d "$2"
  remove LOOPS "$2"
  rm -f "$WORK/$(basename "$1").img"
}

# spawn LOGNAME CMD...: start a store process in the background, logging.
spawn() {
  local name=$1
  shift
  "$@" >"$LOGS/$name.log" 2>&1 &
  SPAWNED=$!
  PIDS+=("$SPAWNED")
}

# wait_ready ENDPOINT PID LOGNAME: until ENDPOINT answers a Get, with a deadline.
wait_ready() {
  if ! "$BIN/load" wait --endpoint "$1" --pid "$2" --timeout "${START_TIMEOUT}s" 2>>"$LOGS/$3.log"; then
    FAIL_DETAIL="$(tail -n 25 "$LOGS/$3.log")"
    return 1
  fi
}

# start_pg NAME: a PostgreSQL cluster with its data directory on a fresh
# loop mount, on 127.0.0.1:$PGPORT and a private socket directory only,
# with the distribution's default settings.
start_pg() {
  local name=$1
  mkloop "$name" || return 1
  chown postgres: "$MNT"
  PGDATA_DIR="$MNT/pgdata"
  local sock="$WORK/pgsock-$name"
  mkdir -p "$sock"
  chown postgres: "$sock"
  PGPORT=$(free_port 25432)
  if ! (cd / && runuser -u postgres -- "$PGBIN/initdb" -D "$PGDATA_DIR" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8) >"$LOGS/$name-initdb.log" 2>&1; then
    FAIL_DETAIL="initdb failed: $(tail -n 10 "$LOGS/$name-initdb.log")"
    return 1
  fi
  # The server log lives in WORK, which postgres can reach; stop_store
  # copies it to LOGS.
  PGLOG="$WORK/$name-postgres.log"
  touch "$PGLOG"
  chown postgres: "$PGLOG"
  PGDATAS+=("$PGDATA_DIR")
  if ! (cd / && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$PGLOG" -w -t "$START_TIMEOUT" \
    -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $sock" start) >/dev/null 2>&1; then
    FAIL_DETAIL="PostgreSQL did not start: $(tail -n 10 "$PGLOG" 2>/dev/null)"
    return 1
  fi
  PGPID=$(head -1 "$PGDATA_DIR/postmaster.pid")
  PG_PIDS="$PGPID"
  # A CHECKPOINT before each device reading: PostgreSQL writes its data
  # files at checkpoints (every 5 min by default), which would otherwise
  # fall at random in or out of the timed phase.
  FLUSH_CMD="$PGBIN/psql -X -q -h 127.0.0.1 -p $PGPORT -U postgres -d postgres -c CHECKPOINT"
}

pg_createdb() { # DBNAME
  "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -c "CREATE DATABASE $1" >>"$LOGS/psql.log" 2>&1
}

# start_STORE: sets ENDPOINT, WATCH_ENDPOINT, SERVER_PIDS, PG_PIDS, MNT,
# LOOPDEV; on failure returns 1 with FAIL_DETAIL.
start_etcd() {
  mkloop etcd || return 1
  local port peer
  port=$(free_port 23790)
  peer=$(free_port $((port + 1)))
  # Debian's etcd 3.4 with its defaults, plus kubeadm's --snapshot-count.
  spawn etcd /usr/bin/etcd --name bench --data-dir "$MNT/etcd" \
    --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "bench=http://127.0.0.1:$peer" --initial-cluster-state new \
    --snapshot-count 10000 --logger zap --log-outputs stderr --log-level warn
  SERVER_PIDS=$SPAWNED
  ENDPOINT="http://127.0.0.1:$port"
  wait_ready "$ENDPOINT" "$SPAWNED" etcd
}

start_kine-sqlite() {
  mkloop kine-sqlite || return 1
  mkdir -p "$MNT/db"
  spawn kine-sqlite "$BIN/kine" --listen-address "unix://$MNT/kine.sock" --endpoint "sqlite://$MNT/db/state.db"
  SERVER_PIDS=$SPAWNED
  ENDPOINT="unix://$MNT/kine.sock"
  wait_ready "$ENDPOINT" "$SPAWNED" kine-sqlite
}

start_kine-postgres() {
  start_pg kine-postgres || return 1
  pg_createdb kine || { FAIL_DETAIL="CREATE DATABASE kine failed: $(tail -n 5 "$LOGS/psql.log")"; return 1; }
  mkdir -p "$MNT/kine"
  spawn kine-postgres "$BIN/kine" --listen-address "unix://$MNT/kine/kine.sock" \
    --endpoint "postgres://postgres@127.0.0.1:$PGPORT/kine?sslmode=disable"
  SERVER_PIDS=$SPAWNED
  ENDPOINT="unix://$MNT/kine/kine.sock"
  wait_ready "$ENDPOINT" "$SPAWNED" kine-postgres
}

start_cloudless-embedded() {
  if [ -n "$CLOUDLESS_ERR" ]; then FAIL_DETAIL=$CLOUDLESS_ERR; return 1; fi
  mkloop cloudless-embedded || return 1
  mkdir -p "$MNT/data"
  spawn cloudless-embedded "$CLOUDLESS" --log-level warn datastore --data-dir "$MNT/data" --listen-socket "$MNT/data/etcd.sock"
  SERVER_PIDS=$SPAWNED
  ENDPOINT="unix://$MNT/data/etcd.sock"
  wait_ready "$ENDPOINT" "$SPAWNED" cloudless-embedded
}

# Two servers on one database: the workload writes through A, the watcher
# watches through B, so watch latency is cross-server.
start_cloudless-postgres() {
  if [ -n "$CLOUDLESS_ERR" ]; then FAIL_DETAIL=$CLOUDLESS_ERR; return 1; fi
  start_pg cloudless-postgres || return 1
  pg_createdb cloudless || { FAIL_DETAIL="CREATE DATABASE cloudless failed: $(tail -n 5 "$LOGS/psql.log")"; return 1; }
  local dsn="postgres://postgres@127.0.0.1:$PGPORT/cloudless?sslmode=disable" a b
  mkdir -p "$MNT/ds-a" "$MNT/ds-b"
  spawn cloudless-postgres-a "$CLOUDLESS" --log-level warn datastore --data-dir "$MNT/ds-a" --listen-socket "$MNT/ds-a/etcd.sock" --datastore-endpoint "$dsn"
  a=$SPAWNED
  wait_ready "unix://$MNT/ds-a/etcd.sock" "$a" cloudless-postgres-a || return 1
  spawn cloudless-postgres-b "$CLOUDLESS" --log-level warn datastore --data-dir "$MNT/ds-b" --listen-socket "$MNT/ds-b/etcd.sock" --datastore-endpoint "$dsn"
  b=$SPAWNED
  SERVER_PIDS="$a,$b"
  ENDPOINT="unix://$MNT/ds-a/etcd.sock"
  WATCH_ENDPOINT="unix://$MNT/ds-b/etcd.sock"
  wait_ready "$WATCH_ENDPOINT" "$b" cloudless-postgres-b
}

# stop_store: stop what start_STORE started and remove its file system.
stop_store() {
  local p
  for p in ${SERVER_PIDS//,/ }; do
    stop_pid "$p" 20
    remove PIDS "$p"
  done
  for p in "${PIDS[@]}"; do stop_pid "$p" 20; done # a server that was spawned but not recorded yet
  PIDS=()
  if [ -n "$PGDATA_DIR" ]; then
    stop_pg "$PGDATA_DIR"
    remove PGDATAS "$PGDATA_DIR"
    [ -f "$PGLOG" ] && cp "$PGLOG" "$LOGS/"
  fi
  [ -n "$MNT" ] && mountpoint -q "$MNT" && rmloop "$MNT" "$LOOPDEV"
  return 0
}

# ---------------------------------------------------------------- the run
log "stores: $STORES; timed phase ${DURATION}s each, compactor every ${COMPACT_INTERVAL}s; logs in $LOGS"
for store in $STORES; do
  ENDPOINT="" WATCH_ENDPOINT="" SERVER_PIDS="" PG_PIDS="" MNT="" LOOPDEV="" PGDATA_DIR="" PGLOG="" FLUSH_CMD="" FAIL_DETAIL="" SPAWNED=""
  log "$store: starting"
  if ! "start_$store"; then
    log "$store: failed to start"
    "$BIN/load" mark --store "$store" --status "failed to start" --detail "$FAIL_DETAIL" --out "$RES/$store.json"
    stop_store
    continue
  fi
  log "$store: measuring (${DURATION}s timed phase, then $LIST_OBJECTS pods and lists)"
  if ! run_fg "$LOGS/$store-load.log" "$BIN/load" run --store "$store" --endpoint "$ENDPOINT" --watch-endpoint "${WATCH_ENDPOINT:-$ENDPOINT}" \
    --duration "${DURATION}s" --compact-interval "${COMPACT_INTERVAL}s" --list-objects "$LIST_OBJECTS" \
    --mount "$MNT" --loop-devs "$(basename "$LOOPDEV")" --server-pids "$SERVER_PIDS" --pg-pids "$PG_PIDS" \
    --flush-cmd "$FLUSH_CMD" --out "$RES/$store.json"; then
    log "$store: the measurement failed: $(tail -n 1 "$LOGS/$store-load.log")"
    if [ ! -s "$RES/$store.json" ]; then
      "$BIN/load" mark --store "$store" --status "failed: load driver exited" --detail "$(tail -n 20 "$LOGS/$store-load.log")" --out "$RES/$store.json"
    fi
  fi
  log "$store: stopping"
  stop_store
done

# ---------------------------------------------------------------- report
versions="etcd: $(/usr/bin/etcd --version 2>/dev/null | head -1 | sed 's/^etcd Version: //' || echo n/a) (Debian etcd-server)"
versions+=$'\n'"kine: $(awk '$1=="github.com/k3s-io/kine"{print $2}' "$HERE/kine/go.mod")"
[ -n "$PGBIN" ] && versions+=$'\n'"PostgreSQL: $("$PGBIN/postgres" --version | awk '{print $3}')"
versions+=$'\n'"cloudless: $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
versions+=$'\n'"client: go.etcd.io/etcd/client/v3 $(awk '$1=="go.etcd.io/etcd/client/v3"{print $2}' "$HERE/load/go.mod")"
notes="Stores run one after another, each alone with the workload driver on the same machine; etcd serves on 127.0.0.1 TCP, the others on unix sockets."
[ "$QUICK" = 1 ] && notes+=$'\n'"**QUICK=1 run**: ${DURATION} s timed phase and compactor every ${COMPACT_INTERVAL} s; indicative only."
backing_dev=$(df --output=source,fstype "$WORK" | tail -1 | awk '{print $2" on "$1}')
mkdir -p "$STATE/results"
cp "$RES"/*.json "$STATE/results/" 2>/dev/null || true
"$BIN/load" report --results "$RES" --stores "$STORES" --md "$OUT.md" --png "$OUT.png" --csv "$OUT.csv" \
  --date "$DATE" --host "$HOST" --nproc "$(nproc)" --versions "$versions" \
  --backing "loop image files in /var/tmp ($backing_dev)" --notes "$notes"
log "wrote $OUT.md, .png and .csv (raw results: $STATE/results/, logs: $LOGS)"
