#!/usr/bin/env bash
# run_cross_shard.sh — cross-shard transfers (issue 5): what TC/C and saga cost against
# same-shard transfers, and how long a killed router's transactions stay in doubt.
#
#   benchmarks/run_cross_shard.sh                                  # both parts
#   PARTS=throughput RUNS=3 DURATION_S=8 benchmarks/run_cross_shard.sh
#   PARTS=resolution REPEATS=3 benchmarks/run_cross_shard.sh
#   DURABLE=1 benchmarks/run_cross_shard.sh                        # shards --fsync=always
#   WAIT_IDLE_CORES=0.3 RETRY_BUSY_CORES=0.3 benchmarks/run_cross_shard.sh  # shared machine
#
# Cluster (each part starts its own): a ZooKeeper (deploy/lib.sh), cluster "bench"
# bootstrapped with 2 shards and PARTITIONS partitions (wallet-cluster), shard-0 and
# shard-1 joined with --zk (--in_memory, or with DURABLE=1 --data_dir on DATA_ROOT and
# --fsync=always), and routers. ACCOUNTS accounts are opened and funded through the
# router (driver phase "setup"): they land on both shards by partition.
#
# Part "throughput": one router. RUNS rounds of three runs with the same client
# settings (CONNECTIONS x PIPELINE, wallet-shard-bench through the router):
#   same  --pairs=same                        both accounts on one shard (no MODE)
#   tcc   --pairs=cross --transfer_mode=tcc   accounts on different shards, MODE tcc
#   saga  --pairs=cross --transfer_mode=saga  the same, MODE saga
# (the driver learns each account's shard with PARTITION on both shards). The order
# rotates from round to round (same-tcc-saga, tcc-saga-same, saga-same-tcc). Each run
# waits for an idle machine (wait_idle) and is measured again (up to RETRY_MAX times)
# when other processes used RETRY_BUSY_CORES or more; CPU of the router, both shards
# and the driver is read from /proc around it. Reported: transfers answered OK per
# second, medians (min-max), and the ratios tcc/same and saga/same. Targets: TC/C
# >= 0.30 x same, saga >= 0.40 x same.
#
# Part "resolution": router A (takes the load; --resolver on its defaults) and router B
# (--resolver_min_age_ms=RESOLVER_MIN_AGE_MS --resolver_interval_ms=RESOLVER_INTERVAL_MS,
# no load). REPEATS times for each mode of RES_MODES: cross-shard load through A for
# LOAD_S seconds, SIGKILL of A (by pid), then polled every POLL_MS until TX.INDOUBT 0
# (COUNT 10000) through B is empty, every shard's ROW.INDOUBT 0 (COUNT 10000) is empty
# and every shard's INFO keyspace open_rows is 0 (open_rows also counts rows under a
# lease, which the INDOUBT lists skip). Reported: the time from the kill to that point,
# and what A left behind (open rows on the shards, and TX.INDOUBT's count, right after
# the kill). A new router A (new id) is started for the next repeat.
#
# Both parts end with the conservation check: wait until TX.INDOUBT 0 is empty, then the
# sum of every balance through a router (driver phase "verify") must be ACCOUNTS x
# 1 000 000, and each shard's AUDIT must say conserved 1, held 0, pending_credit 0
# (and moved_out of one shard = moved_in of the other, summed). Exits 3 when money was
# not conserved or a row stayed in doubt, 4 when a throughput run had error replies,
# 5 when a resolution did not finish within RES_TIMEOUT_S.
#
# Settings (environment): PARTS ("throughput resolution"), CONNECTIONS (50), PIPELINE
# (32), ACCOUNTS (100000), DURATION_S (8), WARMUP_S (1), RUNS (3), PARTITIONS (64),
# DURABLE (0), REPEATS (3), RES_MODES ("tcc saga"), LOAD_S (3), POLL_MS (20),
# RESOLVER_MIN_AGE_MS (1000), RESOLVER_INTERVAL_MS (200), RES_TIMEOUT_S (60),
# ROUTER_FLAGS, SHARD_FLAGS (default --idempotency_window_ms=30000, as in
# run_router_vs_direct.sh), DATA_ROOT (/tmp; with DURABLE=1 not a tmpfs unless
# ALLOW_TMPFS=1), BUILD_DIR (build-bench, Release), SKIP_BUILD=1, WAIT_IDLE_CORES /
# WAIT_IDLE_MAX_S (common.sh), RETRY_BUSY_CORES / RETRY_MAX, PERF_S (if > 0: a
# `perf record -e cpu-clock -g` of PERF_PROCESS (router, default; shard-0 or shard-1)
# for PERF_S seconds during the first run of each kind, OUT_DIR/perf-<process>-<kind>.data;
# it costs that process some CPU, so use it for a profile run, not for the figures), OUT_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-bench}"
[[ "$BUILD_DIR" == /* ]] || BUILD_DIR="$ROOT/$BUILD_DIR"
PARTS="${PARTS:-throughput resolution}"
CONNECTIONS="${CONNECTIONS:-50}"
PIPELINE="${PIPELINE:-32}"
ACCOUNTS="${ACCOUNTS:-100000}"
DURATION_S="${DURATION_S:-8}"
WARMUP_S="${WARMUP_S:-1}"
RUNS="${RUNS:-3}"
PARTITIONS="${PARTITIONS:-64}"
DURABLE="${DURABLE:-0}"
REPEATS="${REPEATS:-3}"
RES_MODES="${RES_MODES:-tcc saga}"
LOAD_S="${LOAD_S:-3}"
POLL_MS="${POLL_MS:-20}"
RESOLVER_MIN_AGE_MS="${RESOLVER_MIN_AGE_MS:-1000}"
RESOLVER_INTERVAL_MS="${RESOLVER_INTERVAL_MS:-200}"
RES_TIMEOUT_S="${RES_TIMEOUT_S:-60}"
ROUTER_FLAGS="${ROUTER_FLAGS:-}"
SHARD_FLAGS="${SHARD_FLAGS---idempotency_window_ms=30000}"
DATA_ROOT="${DATA_ROOT:-/tmp}"
ALLOW_TMPFS="${ALLOW_TMPFS:-0}"
SKIP_BUILD="${SKIP_BUILD:-0}"
WAIT_IDLE_CORES="${WAIT_IDLE_CORES:-0}"
WAIT_IDLE_MAX_S="${WAIT_IDLE_MAX_S:-600}"
RETRY_BUSY_CORES="${RETRY_BUSY_CORES:-0}"
RETRY_MAX="${RETRY_MAX:-2}"
PERF_S="${PERF_S:-0}"
PERF_PROCESS="${PERF_PROCESS:-router}"
INITIAL_BALANCE=1000000

# shellcheck source=benchmarks/common.sh
source "$ROOT/benchmarks/common.sh"

for part in $PARTS; do
  [[ "$part" == throughput || "$part" == resolution ]] || { echo "PARTS: throughput and/or resolution, not '$part'" >&2; exit 2; }
done
for mode in $RES_MODES; do
  [[ "$mode" == tcc || "$mode" == saga ]] || { echo "RES_MODES: tcc and/or saga, not '$mode'" >&2; exit 2; }
done
[[ "$PERF_PROCESS" =~ ^(router|shard-0|shard-1)$ ]] || { echo "PERF_PROCESS: router, shard-0 or shard-1" >&2; exit 2; }
[[ "$DURABLE" == 1 ]] || ALLOW_TMPFS=1  # no fsync measured: any file system will do
WORK_DIR="$(data_work_dir wallet-xshard-bench)" || exit 2
OUT_DIR="${OUT_DIR:-$WORK_DIR/out}"
mkdir -p "$OUT_DIR"
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
        --first_account=0 --initial_balance="$INITIAL_BALANCE")

minus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }  # minus <before> <after>


# start_cluster <part>: ZooKeeper, cluster "bench" (2 shards), shard-0 and shard-1;
# sets SHARD_PIDS, SHARD_PORTS, SHARD_PORT_LIST (comma separated).
start_cluster() {
  local part=$1 dir="$WORK_DIR/data/$1" i storage
  mkdir -p "$dir/zookeeper"
  start_zookeeper "$dir/zookeeper"
  "$CLUSTER_TOOL" bootstrap --zk="127.0.0.1:$ZK_PORT" --cluster=bench --shards=2 --partitions="$PARTITIONS" \
    >"$OUT_DIR/$part-bootstrap.log" 2>&1 || { cat "$OUT_DIR/$part-bootstrap.log" >&2; return 1; }
  SHARD_PIDS=(); SHARD_PORTS=()
  for i in 0 1; do
    mkdir -p "$dir/shard-$i"
    if [[ "$DURABLE" == 1 ]]; then storage=(--data_dir="$dir/shard-$i" --fsync=always); else storage=(--in_memory); fi
    # shellcheck disable=SC2086  # SHARD_FLAGS is a list of flags
    start_shard "$OUT_DIR/$part-shard-$i.log" "$dir/shard-$i.port" --zk="127.0.0.1:$ZK_PORT" --cluster=bench \
      --shard_id="shard-$i" "${storage[@]}" $SHARD_FLAGS
    SHARD_PIDS+=("$STARTED_PID"); SHARD_PORTS+=("$STARTED_PORT")
  done
  SHARD_PORT_LIST="${SHARD_PORTS[0]},${SHARD_PORTS[1]}"
  log "$part: ZooKeeper pid $ZK_PID port $ZK_PORT; shards pids ${SHARD_PIDS[*]} ports ${SHARD_PORTS[*]}"
}

# start_router <part> <id> FLAG...: sets ROUTER_PID, ROUTER_PORT once it sees both shards.
start_router() {
  local part=$1 id=$2
  shift 2
  # shellcheck disable=SC2086
  start_server "$ROUTER" "$OUT_DIR/$part-$id.log" "$WORK_DIR/data/$part/$id.port" --zk="127.0.0.1:$ZK_PORT" \
    --cluster=bench --router_id="$id" $ROUTER_FLAGS "$@"
  ROUTER_PID=$STARTED_PID; ROUTER_PORT=$STARTED_PORT
  for _ in $(seq 1 300); do [[ "$(info_field "$ROUTER_PORT" router live_shards)" == 2 ]] && break; sleep 0.1; done
  [[ "$(info_field "$ROUTER_PORT" router live_shards)" == 2 ]] || { echo "router $id does not see both shards" >&2; return 1; }
  log "$part: router $id pid $ROUTER_PID port $ROUTER_PORT"
}

driver() {  # driver <name> <port> <pid> <phases> [FLAG...]: prints the RESULT lines
  local name=$1 port=$2 pid=$3 phases=$4
  shift 4
  "$DRIVER" --target=wallet --port="$port" --server_pid="$pid" --phases="$phases" "${COMMON[@]}" "$@" \
    >"$OUT_DIR/$name.out" 2>"$OUT_DIR/$name.err" || {
      echo "driver $name failed:" >&2; tail -5 "$OUT_DIR/$name.err" >&2; return 1; }
  grep '^RESULT' "$OUT_DIR/$name.out"
}

indoubt_count() {  # indoubt_count <router port>: txids in TX.INDOUBT 0 (COUNT 10000); -1 on error
  local reply
  reply="$(redis-cli -p "$1" TX.INDOUBT 0 COUNT 10000 2>&1)" || { echo -1; return; }
  if grep -q '^\(ERR\|UNAVAILABLE\|MALFORMED\)' <<<"$reply"; then echo -1; return; fi
  grep -c . <<<"$reply" || true
}
row_indoubt_count() {  # row_indoubt_count <shard port>: ROW.INDOUBT 0 COUNT 10000
  redis-cli -p "$1" ROW.INDOUBT 0 COUNT 10000 | grep -c . || true
}
open_rows() { info_field "$1" keyspace open_rows; }

# conservation <part> <router port>: waits for TX.INDOUBT 0 to be empty, then checks
# the sum through the router and each shard's AUDIT; sets CONSERVED[part] and
# CONSERVED_OK[part] (1/0).
declare -A CONSERVED CONSERVED_OK
value() { awk -v k="$1" '{ for (j = 1; j < NF; j += 2) if ($j == k) print $(j + 1) }' <<<"$audit"; }  # of $audit
conservation() {
  local part=$1 port=$2 deadline n verify i held pending ok=1 moved_in=0 moved_out=0 text
  deadline=$((SECONDS + RES_TIMEOUT_S))
  while :; do
    n="$(indoubt_count "$port")"
    [[ "$n" == 0 ]] && break
    if (( SECONDS > deadline )); then log "$part: TX.INDOUBT 0 still lists $n after ${RES_TIMEOUT_S} s"; ok=0; break; fi
    sleep 0.1
  done
  verify="$(driver "$part-verify" "$port" "$ROUTER_PID" verify || true)"
  text="sum=$(field "$verify" sum) expected=$(field "$verify" expected) conserved=$(field "$verify" conserved) indoubt=$n"
  [[ "$(field "$verify" conserved)" == 1 ]] || ok=0
  for i in 0 1; do
    audit="$(redis-cli -p "${SHARD_PORTS[$i]}" AUDIT | paste -sd' ' -)"
    echo "$part shard-$i AUDIT: $audit" >>"$OUT_DIR/$part-audit.txt"
    held="$(value held)"; pending="$(value pending_credit)"
    moved_in=$(( moved_in + $(value moved_in) )); moved_out=$(( moved_out + $(value moved_out) ))
    text+="; shard-$i: conserved $(value conserved) held $held pending_credit $pending open_rows $(open_rows "${SHARD_PORTS[$i]}")"
    [[ "$(value conserved)" == 1 && "$held" == 0 && "$pending" == 0 ]] || ok=0
  done
  text+="; moved_out total $moved_out, moved_in total $moved_in"
  [[ "$moved_in" == "$moved_out" ]] || ok=0
  CONSERVED[$part]="$text"
  CONSERVED_OK[$part]=$ok
  log "$part: conservation: $text"
}

# --- part 1: throughput ----------------------------------------------------------
# results.tsv: round kind ok_per_s p50 p99 errors driver_cores router_cores shard0_cores
# shard1_cores others router_us shards_us driver_us load kept
RESULTS="$OUT_DIR/throughput.tsv"
run_one() {  # run_one <round> <kind: same|tcc|saga>
  local round=$1 kind=$2 flags r0 a0 b0 t0 r1 a1 b1 t1 wall ok_total load others sent
  case "$kind" in
    same) flags=(--pairs=same) ;;
    tcc) flags=(--pairs=cross --transfer_mode=tcc) ;;
    saga) flags=(--pairs=cross --transfer_mode=saga) ;;
  esac
  wait_idle
  load="$(load1)"
  PERF_PID=""
  if [[ "$PERF_S" != 0 && ! -e "$OUT_DIR/perf-$PERF_PROCESS-$kind.data" ]] && command -v perf >/dev/null; then
    local perf_pid=$ROUTER_PID
    [[ "$PERF_PROCESS" == router ]] || perf_pid=${SHARD_PIDS[${PERF_PROCESS#shard-}]}
    (sleep "$((WARMUP_S + 1))"; perf record -e cpu-clock -g -o "$OUT_DIR/perf-$PERF_PROCESS-$kind.data" -p "$perf_pid" \
       -- sleep "$PERF_S" >/dev/null 2>&1) &
    PERF_PID=$!
  fi
  r0="$(cpu_s "$ROUTER_PID")"; a0="$(cpu_s "${SHARD_PIDS[0]}")"; b0="$(cpu_s "${SHARD_PIDS[1]}")"; t0="$(now_s)"
  # --server_pid is the router's: the driver's other_cpu holds both shards' share, taken out below.
  LINE="$(driver "run-$round-$kind" "$ROUTER_PORT" "$ROUTER_PID" run --duration_s="$DURATION_S" \
          --warmup_s="$WARMUP_S" --shard_ports="$SHARD_PORT_LIST" "${flags[@]}" | grep 'phase=run')"
  r1="$(cpu_s "$ROUTER_PID")"; a1="$(cpu_s "${SHARD_PIDS[0]}")"; b1="$(cpu_s "${SHARD_PIDS[1]}")"; t1="$(now_s)"
  [[ -z "$PERF_PID" ]] || wait "$PERF_PID" || true
  wall="$(minus "$t0" "$t1")"
  sent="$(field "$LINE" sent_total)"
  local rc ac bc
  rc="$(ratio "$(minus "$r0" "$r1")" "$wall")"; ac="$(ratio "$(minus "$a0" "$a1")" "$wall")"; bc="$(ratio "$(minus "$b0" "$b1")" "$wall")"
  others="$(awk -v o="$(field "$LINE" other_cpu)" -v a="$ac" -v b="$bc" 'BEGIN { v = o - a - b; printf "%.2f", v < 0 ? 0 : v }')"
  ok_total="$(awk -v r="$(field "$LINE" ok_per_s)" -v s="$(field "$LINE" seconds)" 'BEGIN { print r * s }')"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t1\n' "$round" "$kind" \
    "$(field "$LINE" ok_per_s)" "$(field "$LINE" p50_us)" "$(field "$LINE" p99_us)" "$(field "$LINE" errors)" \
    "$(field "$LINE" driver_cpu)" "$rc" "$ac" "$bc" "$others" \
    "$(per_transfer_us "$(minus "$r0" "$r1")" "$sent" 2)" \
    "$(per_transfer_us "$(awk -v a="$(minus "$a0" "$a1")" -v b="$(minus "$b0" "$b1")" 'BEGIN { print a + b }')" "$sent" 2)" \
    "$(per_transfer_us "$(awk -v c="$(field "$LINE" driver_cpu)" -v s="$(field "$LINE" seconds)" 'BEGIN { print c * s }')" "$ok_total" 2)" \
    "$load" >>"$RESULTS"
  log "round $round $kind: $(field "$LINE" ok_per_s) OK transfers/s, p50 $(field "$LINE" p50_us) us, errors $(field "$LINE" errors);" \
      "cores: router $rc, shards $ac + $bc, driver $(field "$LINE" driver_cpu), others $others; load $load"
}
measure() {  # measure <round> <kind>: run_one, again while other processes disturb it
  local attempt others
  for attempt in $(seq 1 "$RETRY_MAX"); do
    run_one "$@"
    others="$(tail -1 "$RESULTS" | cut -f11)"
    awk -v o="$others" -v l="$RETRY_BUSY_CORES" 'BEGIN { exit !(l > 0 && o >= l) }' || return 0
    sed -i '$ s/\t1$/\t0/' "$RESULTS"
    log "round $1 $2: other processes used $others cores: left out, measured again"
  done
  run_one "$@"
}

throughput_part() {
  local round kinds=(same tcc saga) k
  : >"$RESULTS"
  start_cluster throughput
  start_router throughput router-0
  log "throughput: setup: $ACCOUNTS accounts through the router"
  driver throughput-setup "$ROUTER_PORT" "$ROUTER_PID" setup >/dev/null
  for round in $(seq 1 "$RUNS"); do
    for k in 0 1 2; do measure "$round" "${kinds[$(( (round - 1 + k) % 3 ))]}"; done
  done
  redis-cli -p "$ROUTER_PORT" INFO >"$OUT_DIR/throughput-router-info.txt" 2>&1 || true
  conservation throughput "$ROUTER_PORT"
  stop_started
  rm -rf "$WORK_DIR/data/throughput"
}

# --- part 2: resolution after a router is killed -----------------------------------
# resolution.tsv: repeat mode left_open_rows left_indoubt_via_B resolve_s driver_ok_before_kill
RES_RESULTS="$OUT_DIR/resolution.tsv"
resolution_part() {
  local a_pid a_port b_pid b_port mode n=0 load_pid t_kill t_done rows listed left_rows left_listed
  local deadline status=0 i done_now ok_before
  : >"$RES_RESULTS"
  start_cluster resolution
  start_router resolution router-b --resolver_min_age_ms="$RESOLVER_MIN_AGE_MS" --resolver_interval_ms="$RESOLVER_INTERVAL_MS"
  b_pid=$ROUTER_PID; b_port=$ROUTER_PORT
  start_router resolution router-a0
  a_pid=$ROUTER_PID; a_port=$ROUTER_PORT
  log "resolution: setup: $ACCOUNTS accounts through router A"
  driver resolution-setup "$a_port" "$a_pid" setup >/dev/null
  for _ in $(seq 1 "$REPEATS"); do
    for mode in $RES_MODES; do
      n=$((n + 1))
      if (( n > 1 )); then
        start_router resolution "router-a$n"
        a_pid=$ROUTER_PID; a_port=$ROUTER_PORT
      fi
      wait_idle
      "$DRIVER" --target=wallet --port="$a_port" --phases=run "${COMMON[@]}" --duration_s=600 --warmup_s=0 \
        --shard_ports="$SHARD_PORT_LIST" --pairs=cross --transfer_mode="$mode" \
        >"$OUT_DIR/resolution-load-$n-$mode.out" 2>"$OUT_DIR/resolution-load-$n-$mode.err" &
      load_pid=$!
      sleep "$LOAD_S"
      kill -0 "$load_pid" 2>/dev/null || { echo "the load driver stopped before the kill:" >&2; tail -5 "$OUT_DIR/resolution-load-$n-$mode.err" >&2; return 1; }
      ok_before="$(redis-cli -p "$a_port" INFO transactions | tr -d '\r' | sed -n "s/^${mode}_committed://p")"
      t_kill="$(now_s)"
      stop_pid "$a_pid" KILL
      # What A left behind: every shard's unfinished rows (leased ones included), and
      # what TX.INDOUBT through B lists (leased rows skipped).
      rows=0
      for i in 0 1; do rows=$(( rows + $(open_rows "${SHARD_PORTS[$i]}") )); done
      listed="$(indoubt_count "$b_port")"
      left_rows=$rows; left_listed=$listed
      deadline=$((SECONDS + RES_TIMEOUT_S))
      while :; do
        done_now=1
        [[ "$(indoubt_count "$b_port")" == 0 ]] || done_now=0
        for i in 0 1; do
          [[ "$done_now" == 1 && "$(row_indoubt_count "${SHARD_PORTS[$i]}")" == 0 && "$(open_rows "${SHARD_PORTS[$i]}")" == 0 ]] || done_now=0
        done
        if [[ "$done_now" == 1 ]]; then t_done="$(now_s)"; break; fi
        if (( SECONDS > deadline )); then t_done=""; status=5; break; fi
        sleep "$(awk -v ms="$POLL_MS" 'BEGIN { print ms / 1000 }')"
      done
      wait "$load_pid" 2>/dev/null || true  # the driver fails when A goes: expected
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$mode" "$left_rows" "$left_listed" \
        "${t_done:+$(minus "$t_kill" "$t_done")}" "$ok_before" >>"$RES_RESULTS"
      log "resolution $n ($mode): A killed with $left_rows open rows ($left_listed listed by TX.INDOUBT through B);" \
          "resolved after ${t_done:+$(minus "$t_kill" "$t_done")} s"
      redis-cli -p "$b_port" INFO transactions >"$OUT_DIR/resolution-$n-router-b-transactions.txt" 2>&1 || true
      [[ -n "$t_done" ]] || { log "resolution $n: not finished within ${RES_TIMEOUT_S} s"; break 2; }
    done
  done
  ROUTER_PID=$b_pid
  conservation resolution "$b_port"
  stop_started
  rm -rf "$WORK_DIR/data/resolution"
  return "$status"
}

overall=0
for part in $PARTS; do
  if [[ "$part" == throughput ]]; then throughput_part; else resolution_part || overall=$?; fi
done

# --- report ------------------------------------------------------------------------
echo
echo "cross-shard transfers, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "$REVISION; build $BUILD_DIR; 2 shards ($([[ "$DURABLE" == 1 ]] && echo "--fsync=always, data on $(describe_fs "$WORK_DIR")" || echo --in_memory)), $PARTITIONS partitions;" \
     "SHARD_FLAGS='$SHARD_FLAGS' ROUTER_FLAGS='$ROUTER_FLAGS'; WAIT_IDLE_CORES=$WAIT_IDLE_CORES"
if [[ " $PARTS " == *" throughput "* ]]; then
  col() { awk -F'\t' -v k="$1" -v c="$2" '$2 == k && $16 == 1 { print $c }' "$RESULTS"; }
  summary() { local v; mapfile -t v < <(col "$1" "$2"); echo "$(median "${v[@]}") ($(spread "${v[@]}"))"; }
  echo "throughput: $CONNECTIONS connections x pipeline $PIPELINE through one router, $ACCOUNTS accounts, ${DURATION_S} s per run after ${WARMUP_S} s warm-up, $RUNS rounds"
  echo "every run (cores: router/shards over the whole run incl. warm-up, driver/others over the window; us/tr: CPU"
  echo "microseconds per transfer sent (driver: per OK transfer); kept 0: left out, others >= RETRY_BUSY_CORES=$RETRY_BUSY_CORES):"
  printf '%5s %-5s %9s %7s %7s %-22s %6s %6s %6s %6s %6s %9s %9s %9s %5s %s\n' round kind ok_per_s p50_us p99_us errors driver router shard0 shard1 others router_us shards_us driver_us load kept
  awk -F'\t' '{ printf "%5s %-5s %9s %7s %7s %-22s %6s %6s %6s %6s %6s %9s %9s %9s %5s %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16 }' "$RESULTS"
  echo
  echo "median (min-max) over the kept runs:"
  printf '%-5s %-26s %-20s %-20s %-18s %-18s %-18s %-18s %-18s %s\n' kind ok_transfers/s p50_us p99_us router_cores shard0_cores shard1_cores router_us/tr shards_us/tr driver_us/tr
  for kind in same tcc saga; do
    printf '%-5s %-26s %-20s %-20s %-18s %-18s %-18s %-18s %-18s %s\n' "$kind" "$(summary "$kind" 3)" "$(summary "$kind" 4)" \
      "$(summary "$kind" 5)" "$(summary "$kind" 8)" "$(summary "$kind" 9)" "$(summary "$kind" 10)" "$(summary "$kind" 12)" \
      "$(summary "$kind" 13)" "$(summary "$kind" 14)"
  done
  mapfile -t same < <(col same 3); mapfile -t tcc < <(col tcc 3); mapfile -t saga < <(col saga 3)
  echo "tcc/same = $(ratio "$(median "${tcc[@]}")" "$(median "${same[@]}")") (target >= 0.30); saga/same = $(ratio "$(median "${saga[@]}")" "$(median "${same[@]}")") (target >= 0.40)"
  echo "money: ${CONSERVED[throughput]}"
  [[ "${CONSERVED_OK[throughput]}" == 1 ]] || overall=3
  if [[ "$overall" == 0 ]] && awk -F'\t' '$6 != "none" { found = 1 } END { exit !found }' "$RESULTS"; then
    echo "some runs had error replies (column errors): their transfers/s count only the OK ones"
    overall=4
  fi
fi
if [[ " $PARTS " == *" resolution "* ]]; then
  echo
  echo "resolution: router A killed (SIGKILL) after ${LOAD_S} s of cross-shard load ($CONNECTIONS x $PIPELINE); router B"
  echo "--resolver_min_age_ms=$RESOLVER_MIN_AGE_MS --resolver_interval_ms=$RESOLVER_INTERVAL_MS; time from the kill until TX.INDOUBT 0"
  echo "through B, every shard's ROW.INDOUBT 0 and open_rows are empty (polled every ${POLL_MS} ms)"
  printf '%6s %-5s %14s %16s %10s %s\n' kill mode open_rows_left listed_through_B resolve_s committed_by_A
  awk -F'\t' '{ printf "%6s %-5s %14s %16s %10s %s\n", $1, $2, $3, $4, $5, $6 }' "$RES_RESULTS"
  for mode in $RES_MODES; do
    mapfile -t times < <(awk -F'\t' -v m="$mode" '$2 == m && $5 != "" { print $5 }' "$RES_RESULTS")
    mapfile -t left < <(awk -F'\t' -v m="$mode" '$2 == m { print $3 }' "$RES_RESULTS")
    [[ ${#times[@]} -gt 0 ]] && echo "$mode: resolved in $(median "${times[@]}") s ($(spread "${times[@]}")); left behind $(median "${left[@]}") open rows ($(spread "${left[@]}"))"
  done
  echo "money: ${CONSERVED[resolution]:-not checked}"
  [[ "${CONSERVED_OK[resolution]:-0}" == 1 ]] || overall=3
fi
exit "$overall"
