#!/usr/bin/env bash
# run_router_vs_direct.sh — what a router costs: the same same-shard transfer workload
# (wallet-shard-bench --target=wallet: TRANSFER between accounts of one shard) sent
# (a) straight to the shard and (b) through a wallet-router in front of it, in one
# run, on one cluster: a ZooKeeper, one shard joined with --zk, one router.
#
#   benchmarks/run_router_vs_direct.sh                       # both modes, 3 rounds each
#   MODES=in_memory RUNS=5 benchmarks/run_router_vs_direct.sh
#   WAIT_IDLE_CORES=0.3 RETRY_BUSY_CORES=0.3 benchmarks/run_router_vs_direct.sh  # shared machine
#
# What it does, for each mode in MODES (in_memory: the shard runs --in_memory;
# durable: --data_dir on DATA_ROOT with --fsync=always):
#   1. starts ZooKeeper (Debian's package; deploy/lib.sh zookeeper_config) on a free
#      port, bootstraps cluster "bench" (1 shard, PARTITIONS partitions) with
#      wallet-cluster, starts wallet-shard --zk and wallet-router (ROUTER_FLAGS), and
#      waits until the router sees the shard;
#   2. opens and funds ACCOUNTS accounts straight on the shard (driver phase "setup");
#   3. RUNS rounds of two runs, "direct" (driver -> shard) and "router" (driver ->
#      router -> shard), the order alternating from round to round (direct first in
#      odd rounds); each run after wait_idle, with the shard's and the router's CPU
#      time read from /proc around it;
#   4. checks money conservation through the router (driver phase "verify": the sum
#      of all balances);
#   5. stops router, shard and ZooKeeper by pid (also on any exit: common.sh's
#      cleanup_on_exit).
# Then prints every run and, per mode, the medians (min-max) and the ratio
# router/direct of the medians of transfers answered OK per second. Target (issue 4):
# router >= 0.5 x direct. Exits 3 if money was not conserved, 4 if any run had error
# replies. Raw output is kept in $OUT_DIR.
#
# Settings (environment): CONNECTIONS (50), PIPELINE (32), ACCOUNTS (100000),
# DURATION_S (10), WARMUP_S (1), RUNS (3), MODES ("in_memory durable"), PARTITIONS
# (64), ROUTER_FLAGS, SHARD_FLAGS (more flags for each; SHARD_FLAGS defaults to
# --idempotency_window_ms=30000, see below), DATA_ROOT (/tmp; not a
# tmpfs for the durable mode unless ALLOW_TMPFS=1), BUILD_DIR (build-bench, Release),
# SKIP_BUILD=1, WAIT_IDLE_CORES / WAIT_IDLE_MAX_S (common.sh), RETRY_BUSY_CORES /
# RETRY_MAX (below), OUT_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-bench}"
[[ "$BUILD_DIR" == /* ]] || BUILD_DIR="$ROOT/$BUILD_DIR"
CONNECTIONS="${CONNECTIONS:-50}"
PIPELINE="${PIPELINE:-32}"
ACCOUNTS="${ACCOUNTS:-100000}"
DURATION_S="${DURATION_S:-10}"
WARMUP_S="${WARMUP_S:-1}"
RUNS="${RUNS:-3}"
MODES="${MODES:-in_memory durable}"
PARTITIONS="${PARTITIONS:-64}"
ROUTER_FLAGS="${ROUTER_FLAGS:-}"
# A 30 s idempotency window: with the default 10 minutes the shard's record table
# reaches max_txn_records (50 M) within the rounds at these rates, and then every
# transfer is refused BUSY (README.md, "Issues found", 3). Set SHARD_FLAGS= for none.
SHARD_FLAGS="${SHARD_FLAGS---idempotency_window_ms=30000}"
DATA_ROOT="${DATA_ROOT:-/tmp}"
ALLOW_TMPFS="${ALLOW_TMPFS:-0}"
SKIP_BUILD="${SKIP_BUILD:-0}"
WAIT_IDLE_CORES="${WAIT_IDLE_CORES:-0}"
WAIT_IDLE_MAX_S="${WAIT_IDLE_MAX_S:-600}"
# A run during which other processes used RETRY_BUSY_CORES cores or more is shown but
# left out of the medians and done again, RETRY_MAX times at most (the last attempt
# counts whatever the load). 0 disables.
RETRY_BUSY_CORES="${RETRY_BUSY_CORES:-0}"
RETRY_MAX="${RETRY_MAX:-2}"

# shellcheck source=benchmarks/common.sh
source "$ROOT/benchmarks/common.sh"

for mode in $MODES; do
  [[ "$mode" == in_memory || "$mode" == durable ]] || { echo "MODES: in_memory and/or durable, not '$mode'" >&2; exit 2; }
done
[[ " $MODES " == *" durable "* ]] || ALLOW_TMPFS=1  # no fsync measured: any file system will do
WORK_DIR="$(data_work_dir wallet-router-bench)" || exit 2
OUT_DIR="${OUT_DIR:-$WORK_DIR/out}"
mkdir -p "$OUT_DIR"
# On any exit: router, shard, ZooKeeper stopped by pid (the last started first).
cleanup_on_exit "$WORK_DIR/data"

# --- build ---------------------------------------------------------------------
build_benchmark_binaries
ROUTER="$BUILD_DIR/src/router/wallet-router"
CLUSTER_TOOL="$BUILD_DIR/src/cluster/wallet-cluster"
if [[ "$SKIP_BUILD" != 1 ]]; then ninja -C "$BUILD_DIR" wallet-router wallet-cluster >/dev/null; fi
for tool in "$SHARD" "$DRIVER" "$ROUTER" "$CLUSTER_TOOL"; do [[ -x "$tool" ]] || { echo "missing $tool" >&2; exit 1; }; done
for tool in java redis-cli ss findmnt; do
  command -v "$tool" >/dev/null || { echo "missing $tool (deploy/setup.sh installs it)" >&2; exit 1; }
done

COMMON=(--connections="$CONNECTIONS" --pipeline="$PIPELINE" --accounts="$ACCOUNTS"
        --duration_s="$DURATION_S" --warmup_s="$WARMUP_S" --first_account=0)

driver() {  # driver <name> <port> <pid> <phases>: prints the RESULT lines
  "$DRIVER" --target=wallet --port="$2" --server_pid="$3" --phases="$4" "${COMMON[@]}" \
    >"$OUT_DIR/$1.out" 2>"$OUT_DIR/$1.err" || {
      echo "driver $1 failed:" >&2; tail -5 "$OUT_DIR/$1.err" >&2; return 1; }
  grep '^RESULT' "$OUT_DIR/$1.out"
}


# One run: sets LINE (the driver's RESULT line) and appends a row to RESULTS:
# mode round path ok_per_s p50 p99 max errors driver_cores shard_cores router_cores
# other_cores shard_us/transfer router_us/transfer load kept (1, or 0: left out)
RESULTS="$OUT_DIR/results.tsv"
: >"$RESULTS"
run_one() {  # run_one <mode> <round> <path: direct|router>
  local mode=$1 round=$2 path=$3 port s0 r0 t0 s1 r1 t1 load wall sent shard_cores router_cores others
  if [[ "$path" == direct ]]; then port=$SHARD_PORT; else port=$ROUTER_PORT; fi
  wait_idle
  load="$(load1)"
  s0="$(cpu_s "$SHARD_PID")"; r0="$(cpu_s "$ROUTER_PID")"; t0="$(now_s)"
  # --server_pid is the shard's in both: the driver's other_cpu then holds the
  # router's share, taken out below.
  LINE="$(driver "$mode-$path-$round" "$port" "$SHARD_PID" run)"
  s1="$(cpu_s "$SHARD_PID")"; r1="$(cpu_s "$ROUTER_PID")"; t1="$(now_s)"
  wall="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')"
  sent="$(field "$LINE" sent_total)"
  shard_cores="$(ratio "$(awk -v a="$s0" -v b="$s1" 'BEGIN { print b - a }')" "$wall")"
  router_cores="$(ratio "$(awk -v a="$r0" -v b="$r1" 'BEGIN { print b - a }')" "$wall")"
  others="$(awk -v o="$(field "$LINE" other_cpu)" -v r="$router_cores" 'BEGIN { v = o - r; printf "%.2f", v < 0 ? 0 : v }')"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t1\n' "$mode" "$round" "$path" \
    "$(field "$LINE" ok_per_s)" "$(field "$LINE" p50_us)" "$(field "$LINE" p99_us)" "$(field "$LINE" max_us)" \
    "$(field "$LINE" errors)" "$(field "$LINE" driver_cpu)" "$shard_cores" "$router_cores" "$others" \
    "$(per_transfer_us "$(awk -v a="$s0" -v b="$s1" 'BEGIN { print b - a }')" "$sent")" \
    "$(per_transfer_us "$(awk -v a="$r0" -v b="$r1" 'BEGIN { print b - a }')" "$sent")" "$load" >>"$RESULTS"
  log "$mode round $round $path: $(field "$LINE" ok_per_s) transfers/s, p50 $(field "$LINE" p50_us) us," \
      "errors $(field "$LINE" errors); cores: shard $shard_cores, router $router_cores," \
      "driver $(field "$LINE" driver_cpu), others $others; load $load"
}

measure() {  # measure <mode> <round> <path>: run_one, again while other processes disturb it
  local attempt others
  for attempt in $(seq 1 "$RETRY_MAX"); do
    run_one "$@"
    others="$(tail -1 "$RESULTS" | cut -f12)"
    awk -v o="$others" -v l="$RETRY_BUSY_CORES" 'BEGIN { exit !(l > 0 && o >= l) }' || return 0
    sed -i '$ s/\t1$/\t0/' "$RESULTS"
    log "$1 round $2 $3: other processes used $others cores: left out, measured again"
  done
  run_one "$@"
}

declare -A CONSERVED
run_mode() {  # run_mode <in_memory|durable>
  local mode=$1 dir="$WORK_DIR/data/$1" storage round verify
  mkdir -p "$dir/zookeeper" "$dir/shard"
  if [[ "$mode" == in_memory ]]; then storage=(--in_memory); else storage=(--data_dir="$dir/shard" --fsync=always); fi
  log "$mode: ZooKeeper, cluster 'bench' (1 shard, $PARTITIONS partitions), shard, router"
  start_zookeeper "$dir/zookeeper"
  "$CLUSTER_TOOL" bootstrap --zk="127.0.0.1:$ZK_PORT" --cluster=bench --shards=1 --partitions="$PARTITIONS" \
    >"$OUT_DIR/$mode-bootstrap.log" 2>&1 || { cat "$OUT_DIR/$mode-bootstrap.log" >&2; return 1; }
  # shellcheck disable=SC2086  # SHARD_FLAGS and ROUTER_FLAGS are lists of flags
  start_shard "$OUT_DIR/$mode-shard.log" "$dir/shard.port" --zk="127.0.0.1:$ZK_PORT" --cluster=bench \
    --shard_id=shard-0 "${storage[@]}" $SHARD_FLAGS
  SHARD_PID=$STARTED_PID; SHARD_PORT=$STARTED_PORT
  # shellcheck disable=SC2086
  start_server "$ROUTER" "$OUT_DIR/$mode-router.log" "$dir/router.port" --zk="127.0.0.1:$ZK_PORT" \
    --cluster=bench --router_id=router-0 $ROUTER_FLAGS
  ROUTER_PID=$STARTED_PID; ROUTER_PORT=$STARTED_PORT
  for _ in $(seq 1 300); do [[ "$(info_field "$ROUTER_PORT" router live_shards)" == 1 ]] && break; sleep 0.1; done
  [[ "$(info_field "$ROUTER_PORT" router live_shards)" == 1 ]] || { echo "the router does not see the shard" >&2; return 1; }
  log "$mode: ZooKeeper pid $ZK_PID port $ZK_PORT; shard pid $SHARD_PID port $SHARD_PORT; router pid $ROUTER_PID port $ROUTER_PORT"

  log "$mode: setup: $ACCOUNTS accounts, straight on the shard"
  driver "$mode-setup" "$SHARD_PORT" "$SHARD_PID" setup >/dev/null
  for round in $(seq 1 "$RUNS"); do
    if (( round % 2 == 1 )); then
      measure "$mode" "$round" direct; measure "$mode" "$round" router
    else
      measure "$mode" "$round" router; measure "$mode" "$round" direct
    fi
  done
  log "$mode: verify through the router"
  verify="$(driver "$mode-verify" "$ROUTER_PORT" "$ROUTER_PID" verify || true)"
  CONSERVED[$mode]="conserved=$(field "$verify" conserved) sum=$(field "$verify" sum) expected=$(field "$verify" expected)"
  redis-cli -p "$ROUTER_PORT" INFO >"$OUT_DIR/$mode-router-info.txt" 2>&1 || true
  stop_started  # router, shard, ZooKeeper, by pid
  rm -rf "$dir"
}

for mode in $MODES; do run_mode "$mode"; done

# --- table ---------------------------------------------------------------------
col() { awk -F'\t' -v m="$1" -v p="$2" -v c="$3" '$1 == m && $3 == p && $16 == 1 { print $c }' "$RESULTS"; }
summary() {  # summary <mode> <path> <column>: median (min-max)
  local values
  mapfile -t values < <(col "$1" "$2" "$3")
  echo "$(median "${values[@]}") ($(spread "${values[@]}"))"
}
echo
echo "router vs direct, same-shard transfers, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "$REVISION; build $BUILD_DIR; WAIT_IDLE_CORES=$WAIT_IDLE_CORES; $CONNECTIONS connections x pipeline $PIPELINE, $ACCOUNTS accounts, ${DURATION_S} s per run after ${WARMUP_S} s warm-up, $RUNS rounds"
echo "durable: data on $(describe_fs "$WORK_DIR"); ROUTER_FLAGS='$ROUTER_FLAGS' SHARD_FLAGS='$SHARD_FLAGS'"
echo "every run (shard, router: cores over the whole run, warm-up included; driver, others (every other process on the"
echo "machine): cores over the measured window; us/tr: CPU microseconds per transfer sent; kept 0: left out of the"
echo "medians, others >= RETRY_BUSY_CORES=$RETRY_BUSY_CORES):"
printf '%-9s %5s %-6s %8s %7s %7s %8s %-8s %6s %6s %6s %6s %10s %11s %5s %s\n' mode round path ok_per_s p50_us p99_us max_us errors driver shard router others shard_us/tr router_us/tr load kept
awk -F'\t' '{ printf "%-9s %5s %-6s %8s %7s %7s %8s %-8s %6s %6s %6s %6s %10s %11s %5s %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16 }' "$RESULTS"
echo
echo "median (min-max) over the kept runs:"
printf '%-9s %-6s %-26s %-18s %-20s %-18s %-18s %-18s %-11s %s\n' mode path ok_transfers/s p50_us p99_us shard_cores \
  router_cores others_cores shard_us/tr router_us/tr
status=0
for mode in $MODES; do
  for path in direct router; do
    printf '%-9s %-6s %-26s %-18s %-20s %-18s %-18s %-18s %-11s %s\n' "$mode" "$path" "$(summary "$mode" "$path" 4)" \
      "$(summary "$mode" "$path" 5)" "$(summary "$mode" "$path" 6)" "$(summary "$mode" "$path" 10)" \
      "$(summary "$mode" "$path" 11)" "$(summary "$mode" "$path" 12)" "$(summary "$mode" "$path" 13)" \
      "$(summary "$mode" "$path" 14)"
  done
done
echo
for mode in $MODES; do
  mapfile -t direct < <(col "$mode" direct 4)
  mapfile -t routed < <(col "$mode" router 4)
  echo "$mode: router/direct = $(ratio "$(median "${routed[@]}")" "$(median "${direct[@]}")") (medians; target >= 0.5); ${CONSERVED[$mode]}"
  [[ "${CONSERVED[$mode]}" == conserved=1* ]] || status=3
done
if [[ "$status" == 0 ]] && awk -F'\t' '$8 != "none" { found = 1 } END { exit !found }' "$RESULTS"; then
  echo "some runs had error replies (column errors): their transfers/s count only the OK ones"
  status=4
fi
exit "$status"
