#!/usr/bin/env bash
# run_shard_vs_redis.sh — wallet-shard against its peer, redis-server running the same
# atomic transfer as a Lua script, in one run, with the same client settings.
#
#   benchmarks/run_shard_vs_redis.sh                       # 3 rounds of 10 s per target
#   RUNS=5 DURATION_S=20 benchmarks/run_shard_vs_redis.sh
#   CONNECTIONS=50 PIPELINE=32 ACCOUNTS=100000 SKIP_BUILD=1 benchmarks/run_shard_vs_redis.sh
#
# What it does:
#   1. builds wallet-shard and wallet-shard-bench into $BUILD_DIR (default build-bench,
#      Release) unless SKIP_BUILD=1;
#   2. starts wallet-shard (--port=0 --ready_file) and redis-server (free port, no
#      persistence, in a temporary directory) as child processes, stopped by PID on exit;
#   3. opens and funds ACCOUNTS accounts on each (driver phase "setup");
#   4. RUNS rounds, each round in this order: driver -> wallet (TRANSFER), driver ->
#      redis (EVALSHA), driver PING -> redis (the driver's own ceiling), driver PING ->
#      wallet-shard (its network ceiling), redis-benchmark EVALSHA -> redis (cross-check
#      of the driver's Redis figure) and redis-benchmark PING_MBULK -> redis;
#   5. checks money conservation on both (driver phase "verify": sum of balances);
#   6. prints the medians (and min-max) and the ratio wallet/redis.
# Raw driver output is kept in $OUT_DIR (default: a new directory under /tmp).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-bench}"
CONNECTIONS="${CONNECTIONS:-50}"
PIPELINE="${PIPELINE:-32}"
ACCOUNTS="${ACCOUNTS:-100000}"
DURATION_S="${DURATION_S:-10}"
WARMUP_S="${WARMUP_S:-1}"
RUNS="${RUNS:-3}"
SKIP_BUILD="${SKIP_BUILD:-0}"
# redis-benchmark request counts: about DURATION_S seconds each at the rates seen here.
RB_EVALSHA_REQUESTS="${RB_EVALSHA_REQUESTS:-2000000}"
RB_PING_REQUESTS="${RB_PING_REQUESTS:-20000000}"
SHARD_FLAGS="${SHARD_FLAGS:---in_memory}"   # wallet-shard flags, e.g. --data_dir=... --fsync=always
# On a shared machine: before each measurement, wait (at most WAIT_IDLE_MAX_S) until
# the other processes use less than WAIT_IDLE_CORES cores over 3 s. 0 disables.
WAIT_IDLE_CORES="${WAIT_IDLE_CORES:-0}"
WAIT_IDLE_MAX_S="${WAIT_IDLE_MAX_S:-600}"

WORK_DIR="$(mktemp -d /tmp/wallet-bench.XXXXXX)"
OUT_DIR="${OUT_DIR:-$WORK_DIR/out}"
mkdir -p "$OUT_DIR"
SHARD_PID=""
REDIS_PID=""

cleanup() {
  local status=$?
  for pid in $SHARD_PID $REDIS_PID; do
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$WORK_DIR/redis" "$WORK_DIR/ready"
  echo "raw output kept in $OUT_DIR" >&2
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=benchmarks/common.sh
source "$ROOT/benchmarks/common.sh"

# --- 1. build ----------------------------------------------------------------
build_benchmark_binaries
for tool in "$SHARD" "$DRIVER"; do [[ -x "$tool" ]] || { echo "missing $tool" >&2; exit 1; }; done
for tool in redis-server redis-cli redis-benchmark ss; do
  command -v "$tool" >/dev/null || { echo "missing $tool (deploy/setup.sh installs it)" >&2; exit 1; }
done

# --- 2. servers --------------------------------------------------------------
log "starting wallet-shard"
"$SHARD" --port=0 --ready_file="$WORK_DIR/ready" $SHARD_FLAGS >"$OUT_DIR/wallet-shard.log" 2>&1 &
SHARD_PID=$!
for _ in $(seq 1 100); do [[ -s "$WORK_DIR/ready" ]] && break; sleep 0.05; done
[[ -s "$WORK_DIR/ready" ]] || { echo "wallet-shard did not start" >&2; cat "$OUT_DIR/wallet-shard.log" >&2; exit 1; }
SHARD_PORT="$(cat "$WORK_DIR/ready")"

log "starting redis-server"
mkdir -p "$WORK_DIR/redis"
REDIS_PORT="$(free_port)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  --dir "$WORK_DIR/redis" >"$OUT_DIR/redis-server.log" 2>&1 &
REDIS_PID=$!
for _ in $(seq 1 100); do
  redis-cli -p "$REDIS_PORT" PING >/dev/null 2>&1 && break
  kill -0 "$REDIS_PID" 2>/dev/null || { echo "redis-server did not start" >&2; cat "$OUT_DIR/redis-server.log" >&2; exit 1; }
  sleep 0.05
done
log "wallet-shard pid $SHARD_PID port $SHARD_PORT; redis-server pid $REDIS_PID port $REDIS_PORT ($(redis-server --version | awk '{print $3}'))"

COMMON=(--connections="$CONNECTIONS" --pipeline="$PIPELINE" --accounts="$ACCOUNTS"
        --duration_s="$DURATION_S" --warmup_s="$WARMUP_S" --first_account=0 --redis_key_pad=12)

# field <line> <key>: the value of key=value in a RESULT line.
field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p" | head -1; }

driver() {  # driver <name> <target> <port> <pid> <phases>
  local name=$1 target=$2 port=$3 pid=$4 phases=$5
  [[ "$phases" == run ]] && wait_idle
  "$DRIVER" --target="$target" --port="$port" --server_pid="$pid" --phases="$phases" "${COMMON[@]}" \
    >"$OUT_DIR/$name.out" 2>"$OUT_DIR/$name.err" || {
      echo "driver $name failed:" >&2; tail -5 "$OUT_DIR/$name.err" >&2; return 1; }
  grep '^RESULT' "$OUT_DIR/$name.out"
}

# --- 3. setup ----------------------------------------------------------------
log "setup: $ACCOUNTS accounts on each"
driver setup-wallet wallet "$SHARD_PORT" "$SHARD_PID" setup >/dev/null
driver setup-redis redis "$REDIS_PORT" "$REDIS_PID" setup >/dev/null
SHA="$(redis-cli -p "$REDIS_PORT" SCRIPT LOAD "$("$DRIVER" --print_lua)")"

# --- 4. rounds ---------------------------------------------------------------
declare -a W_TPS W_P50 W_P99 W_MAX W_CPU W_OTHER R_TPS R_P50 R_P99 R_MAX R_CPU R_OTHER
declare -a PING_R PING_R_DRV PING_W RB_EVAL RB_EVAL_P50 RB_PING ERRORS_W ERRORS_R RECORDS
for round in $(seq 1 "$RUNS"); do
  log "round $round/$RUNS: wallet"
  line="$(driver "run-wallet-$round" wallet "$SHARD_PORT" "$SHARD_PID" run)"
  W_TPS+=("$(field "$line" per_s)"); W_P50+=("$(field "$line" p50_us)"); W_P99+=("$(field "$line" p99_us)")
  W_MAX+=("$(field "$line" max_us)")
  W_CPU+=("$(field "$line" server_cpu)"); W_OTHER+=("$(field "$line" other_cpu)")
  ERRORS_W+=("$(field "$line" errors)")
  RECORDS+=("$(redis-cli -p "$SHARD_PORT" INFO keyspace | tr -d '\r' | sed -n 's/^local_records://p')")
  log "  $line"

  log "round $round/$RUNS: redis"
  line="$(driver "run-redis-$round" redis "$REDIS_PORT" "$REDIS_PID" run)"
  R_TPS+=("$(field "$line" per_s)"); R_P50+=("$(field "$line" p50_us)"); R_P99+=("$(field "$line" p99_us)")
  R_MAX+=("$(field "$line" max_us)")
  R_CPU+=("$(field "$line" server_cpu)"); R_OTHER+=("$(field "$line" other_cpu)")
  ERRORS_R+=("$(field "$line" errors)")
  log "  $line"

  log "round $round/$RUNS: driver PING -> redis (driver ceiling)"
  line="$(driver "ping-redis-$round" ping "$REDIS_PORT" "$REDIS_PID" run)"
  PING_R+=("$(field "$line" per_s)"); PING_R_DRV+=("$(field "$line" driver_cpu)")
  log "  $line"

  log "round $round/$RUNS: driver PING -> wallet-shard"
  line="$(driver "ping-wallet-$round" ping "$SHARD_PORT" "$SHARD_PID" run)"
  PING_W+=("$(field "$line" per_s)")
  log "  $line"

  log "round $round/$RUNS: redis-benchmark EVALSHA"
  wait_idle
  redis-benchmark -p "$REDIS_PORT" -c "$CONNECTIONS" -P "$PIPELINE" -n "$RB_EVALSHA_REQUESTS" \
    -r "$ACCOUNTS" --csv EVALSHA "$SHA" 2 'acct:__rand_int__' 'acct:__rand_int__' 1 \
    >"$OUT_DIR/rb-evalsha-$round.csv" 2>&1
  csv="$(grep -v '^"test"' "$OUT_DIR/rb-evalsha-$round.csv" | tail -1)"
  RB_EVAL+=("$(cut -d, -f2 <<<"$csv" | tr -d '"' | cut -d. -f1)")
  RB_EVAL_P50+=("$(cut -d, -f5 <<<"$csv" | tr -d '"')")
  log "  redis-benchmark EVALSHA: $csv"

  log "round $round/$RUNS: redis-benchmark PING_MBULK"
  wait_idle
  redis-benchmark -p "$REDIS_PORT" -c "$CONNECTIONS" -P "$PIPELINE" -n "$RB_PING_REQUESTS" \
    -t ping_mbulk --csv >"$OUT_DIR/rb-ping-$round.csv" 2>&1
  csv="$(grep -v '^"test"' "$OUT_DIR/rb-ping-$round.csv" | tail -1)"
  RB_PING+=("$(cut -d, -f2 <<<"$csv" | tr -d '"' | cut -d. -f1)")
  log "  redis-benchmark PING_MBULK: $csv"
done

# --- 5. conservation ---------------------------------------------------------
log "verify: sum of balances on both"
VERIFY_W="$(driver verify-wallet wallet "$SHARD_PORT" "$SHARD_PID" verify || true)"
VERIFY_R="$(driver verify-redis redis "$REDIS_PORT" "$REDIS_PID" verify || true)"

# --- 6. table ----------------------------------------------------------------
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
spread() { printf '%s\n' "$@" | sort -g | awk 'NR==1{lo=$1} {hi=$1} END {print lo "-" hi}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

MW="$(median "${W_TPS[@]}")"; MR="$(median "${R_TPS[@]}")"
echo
echo "wallet-shard vs redis-server $(redis-server --version | awk '{print $3}'), $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "$REVISION; WAIT_IDLE_CORES=$WAIT_IDLE_CORES; $CONNECTIONS connections x pipeline $PIPELINE, $ACCOUNTS accounts, ${DURATION_S} s per run after ${WARMUP_S} s warm-up, $RUNS runs: median (min-max)"
printf '%-44s %-28s %-28s %s\n' "figure" "wallet-shard" "redis (Lua)" "wallet/redis"
printf '%-44s %-28s %-28s %s\n' "transfers/s (driver)" "$MW ($(spread "${W_TPS[@]}"))" "$MR ($(spread "${R_TPS[@]}"))" "$(ratio "$MW" "$MR")"
printf '%-44s %-28s %-28s\n' "p50 latency us (batch of $PIPELINE)" "$(median "${W_P50[@]}") ($(spread "${W_P50[@]}"))" "$(median "${R_P50[@]}") ($(spread "${R_P50[@]}"))"
printf '%-44s %-28s %-28s\n' "p99 latency us" "$(median "${W_P99[@]}") ($(spread "${W_P99[@]}"))" "$(median "${R_P99[@]}") ($(spread "${R_P99[@]}"))"
printf '%-44s %-28s %-28s\n' "max latency us (each run)" "${W_MAX[*]}" "${R_MAX[*]}"
printf '%-44s %-28s %-28s\n' "server CPU, cores" "$(median "${W_CPU[@]}")" "$(median "${R_CPU[@]}")"
printf '%-44s %-28s %-28s\n' "other processes' CPU during runs, cores" "$(median "${W_OTHER[@]}") ($(spread "${W_OTHER[@]}"))" "$(median "${R_OTHER[@]}") ($(spread "${R_OTHER[@]}"))"
printf '%-44s %-28s %-28s\n' "errors (per run)" "${ERRORS_W[*]}" "${ERRORS_R[*]}"
printf '%-44s %-28s %-28s\n' "redis-benchmark EVALSHA/s (cross-check)" "" "$(median "${RB_EVAL[@]}") ($(spread "${RB_EVAL[@]}"))"
printf '%-44s %-28s %-28s\n' "PING/s, this driver" "$(median "${PING_W[@]}") ($(spread "${PING_W[@]}"))" "$(median "${PING_R[@]}") ($(spread "${PING_R[@]}"))"
printf '%-44s %-28s %-28s\n' "driver CPU at PING -> redis, cores" "" "$(median "${PING_R_DRV[@]}")"
printf '%-44s %-28s %-28s\n' "PING_MBULK/s, redis-benchmark" "" "$(median "${RB_PING[@]}") ($(spread "${RB_PING[@]}"))"
printf '%-44s %-28s\n' "shard idempotency records after each run" "${RECORDS[*]}"
echo "conservation: wallet: conserved=$(field "$VERIFY_W" conserved) sum=$(field "$VERIFY_W" sum) expected=$(field "$VERIFY_W" expected) audit=$(field "$VERIFY_W" audit)"
echo "conservation: redis:  conserved=$(field "$VERIFY_R" conserved) sum=$(field "$VERIFY_R" sum) expected=$(field "$VERIFY_R" expected)"
echo "target: wallet/redis >= 4"
[[ "$(field "$VERIFY_W" conserved)" == "1" && "$(field "$VERIFY_R" conserved)" == "1" ]]
