#!/usr/bin/env bash
# End-to-end store rate (not a test): edgeflow-loadgen -> Mosquitto -> collectors -> database,
# all on this machine. For each configuration it prints the flow records stored per second
# (records / span of the collectors' receive times) and the bytes on disk per stored record.
#
#   bench/bench fleet [CONFIG...]         CONFIG: sqlite, pg1, pg3 (default: all three)
#   env: DEVICES (300), WINDOWS (15), INTERVAL_MS (1000), FLOWS_MIN (500), FLOWS_MAX (2000),
#        TOP_K (1024), ROUNDS (1)
#
# The generator offers more than the store takes (DEVICES windows of up to TOP_K records per
# INTERVAL_MS): the broker queues the rest, so the rate measured is the collectors'. Mosquitto
# listens on a plain loopback port without logins (TLS and ACLs cost the broker, not the
# store); PostgreSQL runs with Debian's defaults (fsync and synchronous_commit on: a commit is
# durable before the broker is acknowledged) but max_wal_size 4GB (no checkpoint mid-run).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release --locked -p edgeflow-collector --bins
BIN=${CARGO_TARGET_DIR:-target}/release
PGBIN=/usr/lib/postgresql/15/bin
DEVICES=${DEVICES:-300} WINDOWS=${WINDOWS:-15} INTERVAL_MS=${INTERVAL_MS:-1000}
FLOWS_MIN=${FLOWS_MIN:-500} FLOWS_MAX=${FLOWS_MAX:-2000} TOP_K=${TOP_K:-1024} ROUNDS=${ROUNDS:-1}
CONFIGS=("$@")
[ ${#CONFIGS[@]} -gt 0 ] || CONFIGS=(sqlite pg1 pg3)

work=$(mktemp -d /tmp/efbench.XXXXXX)
chmod 0755 "$work"
pids=()
pg_pid=
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # The postmaster itself (runuser does not pass signals on): immediate shutdown.
  if [ -f "$work/pg/data/postmaster.pid" ]; then
    kill -QUIT "$(head -1 "$work/pg/data/postmaster.pid")" 2>/dev/null || true
  fi
  sleep 1
  # The server's log outlives the run (a crash mid-run is otherwise unexplained).
  if [ -f "$work/pg/log" ]; then cp "$work/pg/log" "${TMPDIR:-/tmp}/bench-fleet-postgres.log"; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

port=21883
while ss -ltnH "sport = :$port" | grep -q .; do port=$((port + 1)); done
cat >"$work/mosquitto.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 1000000
max_queued_bytes 0
max_inflight_messages 100
max_packet_size 4195328
EOF
mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
mq_pid=$!
pids+=("$mq_pid")

# CPU seconds a process used (with its waited-for children: PostgreSQL's ended backends).
cpu_s() {
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print ($12 + $13 + $14 + $15) / hz }' "/proc/$1/stat"
}

# PostgreSQL's CPU seconds: the postmaster with its ended backends, and its live processes.
pg_cpu_s() {
  local pm
  pm=$(head -1 "$work/pg/data/postmaster.pid")
  # (processes that end meanwhile make cat fail: not an error here)
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v pm="$pm" -v hz="$(getconf CLK_TCK)" '{
      pid = $1; sub(/.*\) /, "")
      if (pid == pm) t += $12 + $13 + $14 + $15; else if ($2 == pm) t += $12 + $13
    } END { print t / hz }'
}

psql() { "$PGBIN/psql" -h "$work" -U edgeflow -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }
start_pg() {
  mkdir -p "$work/pg"
  chown postgres "$work/pg"
  runuser -u postgres -- "$PGBIN/initdb" -D "$work/pg/data" -U edgeflow --auth=trust -E UTF8 \
    --locale=C >/dev/null
  chown postgres "$work"
  runuser -u postgres -- "$PGBIN/postgres" -D "$work/pg/data" -k "$work" -c listen_addresses= \
    -c max_wal_size=4GB -c max_connections=50 >"$work/pg/log" 2>&1 &
  pg_pid=$!
  for _ in $(seq 100); do "$PGBIN/pg_isready" -q -h "$work" -U edgeflow && return; sleep 0.1; done
  echo "postgres did not start" >&2; cat "$work/pg/log" >&2; exit 1
}

# run CONFIG ROUND: prints "config records seconds rate bytes/record load"
run() {
  local config=$1 round=$2 n=1 db stored
  case $config in
    sqlite) db="$work/r$round.db" ;;
    pg1|pg3)
      [ -n "$pg_pid" ] || start_pg
      psql -d postgres -c "CREATE DATABASE r${round}_$config"
      db="postgres://edgeflow@/r${round}_$config?host=$work"
      [ "$config" = pg3 ] && n=3 ;;
    *) echo "unknown config $config" >&2; exit 2 ;;
  esac
  local base=0
  [ "$config" = sqlite ] || base=$(psql -d "r${round}_$config" -c "SELECT pg_database_size(current_database())")
  local cpids=()
  # Gone before the collectors start: the wait below must not find the last run's lines.
  rm -f "$work"/c*.log "$work"/c*.out
  for i in $(seq 1 $n); do
    local share=()
    # A group per run: the broker keeps the stopped collectors' sessions of an earlier run in
    # their group and goes on handing them their share (queued until they come back).
    [ "$n" -gt 1 ] && share=(--share-group "bench-$round")
    "$BIN/edgeflow-collector" --db "$db" --broker "mqtt://127.0.0.1:$port" --http 127.0.0.1:0 \
      --client-id "bench-$config-$round-$i" "${share[@]}" >"$work/c$i.out" 2>"$work/c$i.log" &
    cpids+=($!)
    pids+=($!)
  done
  for i in $(seq 1 $n); do
    for _ in $(seq 300); do grep -qs "subscribed to" "$work/c$i.log" && break; sleep 0.1; done
    grep -qs "subscribed to" "$work/c$i.log" || { echo "collector $i did not subscribe" >&2; exit 1; }
  done
  local load0 mq0 pg0=0
  load0=$(cut -d' ' -f1 /proc/loadavg)
  mq0=$(cpu_s "$mq_pid")
  [ -z "$pg_pid" ] || pg0=$(pg_cpu_s)
  "$BIN/edgeflow-loadgen" --broker "mqtt://127.0.0.1:$port" --devices "$DEVICES" \
    --site "b$round$config" --windows "$WINDOWS" --interval-ms "$INTERVAL_MS" \
    --flows-min "$FLOWS_MIN" --flows-max "$FLOWS_MAX" --top-k "$TOP_K" \
    --seed "$round" >"$work/acked.jsonl" 2>/dev/null
  local want
  want=$(jq -s 'map(.windows) | add' "$work/acked.jsonl")
  local q="SELECT COALESCE(SUM(windows),0) FROM device_totals"
  for _ in $(seq 1200); do
    if [ "$config" = sqlite ]; then stored=$(sqlite3 "$db" "$q" 2>/dev/null || echo 0)
    else stored=$(psql -d "r${round}_$config" -c "$q"); fi
    [ "$stored" = "$want" ] && break
    sleep 0.5
  done
  local load1
  load1=$(cut -d' ' -f1 /proc/loadavg)
  local ccpu=0
  for p in "${cpids[@]}"; do ccpu=$(awk -v a="$ccpu" -v b="$(cpu_s "$p")" 'BEGIN { print a + b }'); done
  for p in "${cpids[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
  sleep 0.5
  local mqcpu pgcpu=0
  mqcpu=$(awk -v a="$(cpu_s "$mq_pid")" -v b="$mq0" 'BEGIN { print a - b }')
  [ -z "$pg_pid" ] || pgcpu=$(awk -v a="$(pg_cpu_s)" -v b="$pg0" 'BEGIN { print a - b }')
  local stats="SELECT COUNT(*), MAX(received_ms) - MIN(received_ms) FROM flows f JOIN summaries s ON s.id = f.summary_id"
  local records span bytes
  if [ "$config" = sqlite ]; then
    IFS='|' read -r records span < <(sqlite3 "$db" "$stats")
    sqlite3 "$db" "PRAGMA wal_checkpoint(TRUNCATE)" >/dev/null
    bytes=$(($(stat -c %s "$db")))
  else
    IFS='|' read -r records span < <(psql -d "r${round}_$config" -c "$stats")
    psql -d "r${round}_$config" -c "CHECKPOINT"
    bytes=$(($(psql -d "r${round}_$config" -c "SELECT pg_database_size(current_database())") - base))
  fi
  awk -v c="$config" -v r="$records" -v s="$span" -v b="$bytes" -v l0="$load0" -v l1="$load1" \
    -v st="$stored" -v w="$want" -v cc="$ccpu" -v mc="$mqcpu" -v pc="$pgcpu" 'BEGIN {
      printf "%-7s %10d %8.1f %12.0f %10.1f %9.1f %9.1f %9.1f   %s/%s windows, load %s..%s\n",
        c, r, s / 1000, r / (s / 1000), b / r, cc * 1e6 / r, pc * 1e6 / r, mc * 1e6 / r,
        st, w, l0, l1 }'
}

# CPU columns: microseconds of CPU per stored record, collectors (all) / PostgreSQL / Mosquitto.
printf "%-7s %10s %8s %12s %10s %9s %9s %9s\n" config records seconds records/s bytes/rec \
  col-us pg-us mq-us
for round in $(seq 1 "$ROUNDS"); do
  for config in "${CONFIGS[@]}"; do run "$config" "$round"; done
done
