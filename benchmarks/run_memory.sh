#!/usr/bin/env bash
# run_memory.sh — resident bytes per account: wallet-shard holding ACCOUNTS open
# accounts against redis-server holding ACCOUNTS keys acct:<i> with an integer value.
#
#   benchmarks/run_memory.sh                     # 10 million accounts, 3 rounds
#   ACCOUNTS=1000000 RUNS=1 benchmarks/run_memory.sh
#
# Each round starts both servers fresh (child processes, stopped by PID), reads the
# server's resident set (VmRSS in /proc/<pid>/status; for Redis also INFO memory's
# used_memory_rss and used_memory), loads the accounts with the pipelined driver
# (wallet: OPEN <i> USD; redis: SET acct:<i> <INITIAL_BALANCE>), waits for the
# figures to settle, reads them again and prints (after - before) / ACCOUNTS.
#
# The wallet accounts are opened without a deposit: a deposit is a transaction and
# leaves an idempotency record for the window, which is transaction memory, not
# account memory. RECORDS_RUN_S > 0 (default 10) then runs transfers against the
# loaded shard for that long and reports resident bytes per idempotency record too.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-bench}"
ACCOUNTS="${ACCOUNTS:-10000000}"
RUNS="${RUNS:-3}"
INITIAL_BALANCE="${INITIAL_BALANCE:-1000000}"   # > 9999: not one of Redis's shared integers
RECORDS_RUN_S="${RECORDS_RUN_S:-10}"
SKIP_BUILD="${SKIP_BUILD:-0}"

WORK_DIR="$(mktemp -d /tmp/wallet-mem.XXXXXX)"
PIDS=()
cleanup() {
  local status=$?
  for pid in "${PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  done
  rm -rf "$WORK_DIR"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# shellcheck source=benchmarks/common.sh
source "$ROOT/benchmarks/common.sh"
build_benchmark_binaries
vmrss_bytes() { awk '/^VmRSS:/ {print $2 * 1024}' "/proc/$1/status"; }
info_field() { redis-cli -p "$1" INFO "$2" | tr -d '\r' | sed -n "s/^$3://p"; }
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
per() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.1f", (b - a) / n }'; }

COMMON=(--connections=50 --pipeline=32 --accounts="$ACCOUNTS" --first_account=0
        --initial_balance="$INITIAL_BALANCE" --redis_key_pad=0)
declare -a W_RSS R_RSS R_INFO_RSS R_USED W_RECORD
for round in $(seq 1 "$RUNS"); do
  # --- wallet-shard ---
  rm -f "$WORK_DIR/ready"
  "$SHARD" --port=0 --ready_file="$WORK_DIR/ready" --in_memory >"$WORK_DIR/shard.log" 2>&1 &
  shard_pid=$!; PIDS+=("$shard_pid")
  for _ in $(seq 1 100); do [[ -s "$WORK_DIR/ready" ]] && break; sleep 0.05; done
  port="$(cat "$WORK_DIR/ready")"
  sleep 0.5
  before="$(vmrss_bytes "$shard_pid")"
  "$DRIVER" --target=wallet --port="$port" --phases=open "${COMMON[@]}" 2>/dev/null | grep '^RESULT' >&2
  sleep 1
  after="$(vmrss_bytes "$shard_pid")"
  accounts="$(info_field "$port" keyspace accounts)"
  [[ "$accounts" == "$ACCOUNTS" ]] || { echo "wallet-shard holds $accounts accounts, expected $ACCOUNTS" >&2; exit 1; }
  W_RSS+=("$(per "$before" "$after" "$ACCOUNTS")")
  log "round $round wallet-shard: VmRSS $before -> $after bytes: $(per "$before" "$after" "$ACCOUNTS") bytes/account"
  if [[ "$RECORDS_RUN_S" != "0" ]]; then
    # Idempotency records: transfers between the (zero-balance) accounts would all be
    # refused, so fund a subset first (its deposits are records too; counted below).
    records_before="$(info_field "$port" keyspace local_records)"
    rss_before="$(vmrss_bytes "$shard_pid")"
    "$DRIVER" --target=wallet --port="$port" --phases=setup,run --connections=50 --pipeline=32 \
      --accounts=100000 --first_account=0 --initial_balance="$INITIAL_BALANCE" \
      --duration_s="$RECORDS_RUN_S" --warmup_s=0 2>/dev/null | grep '^RESULT phase=run' >&2
    sleep 1
    records_after="$(info_field "$port" keyspace local_records)"
    rss_after="$(vmrss_bytes "$shard_pid")"
    records=$((records_after - records_before))
    W_RECORD+=("$(per "$rss_before" "$rss_after" "$records")")
    log "round $round wallet-shard: $records idempotency records: VmRSS $rss_before -> $rss_after: $(per "$rss_before" "$rss_after" "$records") bytes/record"
  fi
  stop "$shard_pid"

  # --- redis-server ---
  mkdir -p "$WORK_DIR/redis"
  rport="$(free_port)"
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    --dir "$WORK_DIR/redis" >"$WORK_DIR/redis.log" 2>&1 &
  redis_pid=$!; PIDS+=("$redis_pid")
  for _ in $(seq 1 100); do redis-cli -p "$rport" PING >/dev/null 2>&1 && break; sleep 0.05; done
  sleep 1.5   # used_memory_rss is sampled by serverCron
  before="$(vmrss_bytes "$redis_pid")"; before_info="$(info_field "$rport" memory used_memory_rss)"
  before_used="$(info_field "$rport" memory used_memory)"
  "$DRIVER" --target=redis --port="$rport" --phases=open "${COMMON[@]}" 2>/dev/null | grep '^RESULT' >&2
  sleep 1.5
  after="$(vmrss_bytes "$redis_pid")"; after_info="$(info_field "$rport" memory used_memory_rss)"
  after_used="$(info_field "$rport" memory used_memory)"
  keys="$(redis-cli -p "$rport" DBSIZE)"
  [[ "$keys" == "$ACCOUNTS" ]] || { echo "redis holds $keys keys, expected $ACCOUNTS" >&2; exit 1; }
  R_RSS+=("$(per "$before" "$after" "$ACCOUNTS")")
  R_INFO_RSS+=("$(per "$before_info" "$after_info" "$ACCOUNTS")")
  R_USED+=("$(per "$before_used" "$after_used" "$ACCOUNTS")")
  log "round $round redis-server: VmRSS $before -> $after: $(per "$before" "$after" "$ACCOUNTS") bytes/key; used_memory_rss $(per "$before_info" "$after_info" "$ACCOUNTS"); used_memory $(per "$before_used" "$after_used" "$ACCOUNTS")"
  stop "$redis_pid"
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
spread() { printf '%s\n' "$@" | sort -g | awk 'NR==1{lo=$1} {hi=$1} END {print lo "-" hi}'; }
MW="$(median "${W_RSS[@]}")"; MR="$(median "${R_RSS[@]}")"
echo
echo "memory per account, $ACCOUNTS accounts, $RUNS rounds: median (each round); $(date -u +%Y-%m-%dT%H:%MZ); $REVISION"
printf '%-52s %s\n' "wallet-shard, VmRSS delta / account" "$MW (${W_RSS[*]})"
printf '%-52s %s\n' "redis-server, VmRSS delta / key" "$MR (${R_RSS[*]})"
printf '%-52s %s\n' "redis-server, INFO used_memory_rss delta / key" "$(median "${R_INFO_RSS[@]}") (${R_INFO_RSS[*]})"
printf '%-52s %s\n' "redis-server, INFO used_memory delta / key" "$(median "${R_USED[@]}") (${R_USED[*]})"
printf '%-52s %s\n' "ratio wallet/redis (VmRSS)" "$(awk -v a="$MW" -v b="$MR" 'BEGIN { printf "%.2f", a / b }')"
if [[ ${#W_RECORD[@]} -gt 0 ]]; then
  printf '%-52s %s\n' "wallet-shard, VmRSS delta / idempotency record" "$(median "${W_RECORD[@]}") (${W_RECORD[*]})"
fi
echo "target: wallet-shard <= 48 bytes per account"
