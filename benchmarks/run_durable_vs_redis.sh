#!/usr/bin/env bash
# run_durable_vs_redis.sh — the durable shard against its durable peer, in one run:
# wallet-shard --data_dir --fsync=always (group commit: one write + one fdatasync per
# event-loop turn before its replies leave) against redis-server --appendonly yes
# --appendfsync always, both doing the atomic transfer workload of
# run_shard_vs_redis.sh (wallet: TRANSFER; Redis: EVALSHA of the Lua transfer) with the
# same driver settings.
#
#   benchmarks/run_durable_vs_redis.sh                     # 3 rounds each + context runs
#   WAIT_IDLE_CORES=0.3 benchmarks/run_durable_vs_redis.sh # on a shared machine
#   RUNS=5 CONTEXT_RUNS=0 DATA_ROOT=/work/tmp SKIP_BUILD=1 benchmarks/run_durable_vs_redis.sh
#
# What it does:
#   1. builds wallet-shard and wallet-shard-bench into $BUILD_DIR (default build-bench,
#      Release) unless SKIP_BUILD=1;
#   2. checks the file system of DATA_ROOT (default /tmp): both servers write there; a
#      tmpfs or ramfs would make fsync free, so it refuses one unless ALLOW_TMPFS=1;
#   3. RUNS rounds, alternating wallet-always and redis-always; then CONTEXT_RUNS rounds
#      of wallet-everysec, wallet-no, redis-everysec and redis-always-norewrite (AOF
#      rewrites off: --auto-aof-rewrite-percentage 0). Every run starts a fresh server
#      on a fresh folder, funds ACCOUNTS accounts (driver phase "setup"), waits for an
#      idle machine (WAIT_IDLE_CORES), runs transfers for WARMUP_S + DURATION_S, checks
#      money conservation (driver phase "verify": sum of balances), stops the server
#      and deletes its folder; a run disturbed by other processes is done again
#      (RETRY_BUSY_CORES);
#   4. around each transfer run it reads INFO persistence (wallet: log_fsyncs,
#      log_commits, log_records) and, when perf can count syscall tracepoints
#      (COUNT_FSYNCS=auto|1|0), counts the server's fdatasync/fsync calls with
#      `perf stat`, which gives Redis's fsyncs too;
#   5. prints every run and the medians (min-max), the ratio wallet/redis, and exits
#      non-zero if money was not conserved in any run.
# Raw output is kept in $OUT_DIR (default: out/ in a new folder under DATA_ROOT).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-bench}"
CONNECTIONS="${CONNECTIONS:-50}"
PIPELINE="${PIPELINE:-32}"
ACCOUNTS="${ACCOUNTS:-100000}"
DURATION_S="${DURATION_S:-10}"
WARMUP_S="${WARMUP_S:-1}"
RUNS="${RUNS:-3}"                  # rounds of wallet-always / redis-always
CONTEXT_RUNS="${CONTEXT_RUNS:-3}"  # rounds of wallet-everysec / wallet-no / redis-everysec / redis-always-norewrite
SKIP_BUILD="${SKIP_BUILD:-0}"
COUNT_FSYNCS="${COUNT_FSYNCS:-auto}"
SHARD_FLAGS="${SHARD_FLAGS:-}"     # more wallet-shard flags (the policy is set per run)
WAIT_IDLE_CORES="${WAIT_IDLE_CORES:-0}"
# A run during which other processes used RETRY_BUSY_CORES cores or more is kept in
# the table but left out of the medians, and run again (at most RETRY_MAX times; the
# last attempt counts whatever the load, marked "busy"). 0 disables.
RETRY_BUSY_CORES="${RETRY_BUSY_CORES:-0}"
RETRY_MAX="${RETRY_MAX:-3}"

# shellcheck source=benchmarks/common.sh
source "$ROOT/benchmarks/common.sh"

WORK_DIR="$(data_work_dir wallet-durable)" || exit 2
OUT_DIR="${OUT_DIR:-$WORK_DIR/out}"
mkdir -p "$OUT_DIR" "$WORK_DIR/data"
PERF_PID=""
cleanup_on_exit "$WORK_DIR/data"

build_benchmark_binaries
for tool in "$SHARD" "$DRIVER"; do [[ -x "$tool" ]] || { echo "missing $tool" >&2; exit 1; }; done
for tool in redis-server redis-cli ss findmnt; do
  command -v "$tool" >/dev/null || { echo "missing $tool (deploy/setup.sh installs it)" >&2; exit 1; }
done
if [[ "$COUNT_FSYNCS" == auto ]]; then
  COUNT_FSYNCS=0
  perf stat -e syscalls:sys_enter_fdatasync -- true >/dev/null 2>&1 && COUNT_FSYNCS=1
fi
FS="$(describe_fs "$WORK_DIR")"
log "data on $FS: $WORK_DIR; fsync counting with perf: $COUNT_FSYNCS"

COMMON=(--connections="$CONNECTIONS" --pipeline="$PIPELINE" --accounts="$ACCOUNTS"
        --duration_s="$DURATION_S" --warmup_s="$WARMUP_S" --first_account=0 --redis_key_pad=12)

driver() {  # driver <name> <target> <port> <pid> <phases>: prints the RESULT lines
  "$DRIVER" --target="$2" --port="$3" --server_pid="$4" --phases="$5" "${COMMON[@]}" \
    >"$OUT_DIR/$1.out" 2>"$OUT_DIR/$1.err" || {
      echo "driver $1 failed:" >&2; tail -5 "$OUT_DIR/$1.err" >&2; return 1; }
  grep '^RESULT' "$OUT_DIR/$1.out"
}

# Counts the server's fdatasync + fsync calls with perf between start_fsync_count and
# stop_fsync_count, which sets FSYNC_COUNT (empty when not counted).
start_fsync_count() {
  [[ "$COUNT_FSYNCS" == 1 ]] || return 0
  perf stat -x, -e syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync -p "$1" -o "$2" &
  PERF_PID=$!
  STARTED_PIDS+=("$PERF_PID")  # stopped on exit like the servers
  sleep 0.2  # perf attaches
}
stop_fsync_count() {
  FSYNC_COUNT=""
  [[ -n "$PERF_PID" ]] || return 0
  stop_pid "$PERF_PID" INT  # perf writes its counts on SIGINT
  PERF_PID=""
  FSYNC_COUNT="$(awk -F, '/syscalls:sys_enter_f/ { n += ($1 ~ /^[0-9]+$/) ? $1 : 0 } END { print n + 0 }' "$1")"
}

# The file system's cost of a small synchronous append right now (other engineers' I/O
# changes it): ms per 4 KiB O_DSYNC write, 200 of them, in a file next to the servers'.
disk_probe() {
  dd if=/dev/zero of="$WORK_DIR/data/probe" bs=4k count=200 oflag=dsync 2>&1 |
    awk '/copied/ { for (i = 2; i <= NF; i++) if ($i ~ /^s,?$/) t = $(i - 1); printf "%.2f", t * 1000 / 200 }'
  rm -f "$WORK_DIR/data/probe"
}
now_s() { date +%s.%N; }
rate() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.0f", a / b; else print "n/a" }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
load1() { cut -d' ' -f1 /proc/loadavg; }

# One run: fresh server and folder, setup, transfers, verify. Appends a row to RESULTS:
# name round per_s p50 p99 max server_cpu other_cpu load fsyncs/s cmds/commit perf_fsyncs/s
# cmds/perf_fsync conserved errors data_bytes background_forks dsync_ms (and measure()
# adds: kept)
RESULTS="$OUT_DIR/results.tsv"
run_one() {  # run_one <name> <round> <tag>
  local name=$1 round=$2 tag=$3 kind=${1%%-*} policy=${1#*-} dir="$WORK_DIR/data/$3" redis_args=()
  if [[ "$policy" == *-norewrite ]]; then policy=${policy%-norewrite}; redis_args=(--auto-aof-rewrite-percentage 0); fi
  local pid port line verify t0 t1 f0 c0 r0 f1 c1 r1 perf_n="" load probe forks="" fsyncs_s="" per_commit="" perf_s="" per_perf=""
  mkdir -p "$dir"
  if [[ "$kind" == wallet ]]; then
    # shellcheck disable=SC2086
    start_shard "$OUT_DIR/$tag.server.log" "$dir/ready" --data_dir="$dir/log" --fsync="$policy" $SHARD_FLAGS
  else
    start_redis "$dir/redis" "$OUT_DIR/$tag.server.log" --save '' --appendonly yes --appendfsync "$policy" "${redis_args[@]}"
  fi
  pid=$STARTED_PID; port=$STARTED_PORT
  driver "$tag-setup" "$kind" "$port" "$pid" setup >/dev/null
  wait_idle
  load="$(load1)"
  probe="$(disk_probe)"
  if [[ "$kind" == wallet ]]; then
    f0="$(info_field "$port" persistence log_fsyncs)"; c0="$(info_field "$port" persistence log_commits)"
    r0="$(info_field "$port" persistence log_records)"
  fi
  start_fsync_count "$pid" "$OUT_DIR/$tag.perf"
  t0="$(now_s)"
  line="$(driver "$tag-run" "$kind" "$port" "$pid" run)"
  t1="$(now_s)"
  stop_fsync_count "$OUT_DIR/$tag.perf"
  perf_n="$FSYNC_COUNT"
  if [[ "$kind" == wallet ]]; then
    f1="$(info_field "$port" persistence log_fsyncs)"; c1="$(info_field "$port" persistence log_commits)"
    r1="$(info_field "$port" persistence log_records)"
    forks="snapshots_taken=$(info_field "$port" persistence snapshots_taken)"
    fsyncs_s="$(rate "$((f1 - f0))" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")"
    per_commit="$(rate "$((r1 - r0))" "$((c1 - c0))")"
  else
    # AOF rewrites (a fork writing a new base file) that ran during the run, on Redis's defaults.
    redis-cli -p "$port" INFO persistence | tr -d '\r' >"$OUT_DIR/$tag.info-persistence"
    forks="aof_rewrites=$(sed -n 's/^aof_rewrites://p' "$OUT_DIR/$tag.info-persistence")"
  fi
  if [[ -n "$perf_n" ]]; then
    perf_s="$(rate "$perf_n" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")"
    per_perf="$(rate "$(field "$line" sent_total)" "$perf_n")"
  fi
  verify="$(driver "$tag-verify" "$kind" "$port" "$pid" verify || true)"
  local bytes
  bytes="$(du -sb "$dir" | cut -f1)"
  stop_pid "$pid"
  rm -rf "$dir"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$round" \
    "$(field "$line" per_s)" "$(field "$line" p50_us)" "$(field "$line" p99_us)" "$(field "$line" max_us)" \
    "$(field "$line" server_cpu)" "$(field "$line" other_cpu)" "$load" "${fsyncs_s:--}" "${per_commit:--}" \
    "${perf_s:--}" "${per_perf:--}" "$(field "$verify" conserved)" "$(field "$line" errors)" "$bytes" "$forks" "$probe" >>"$RESULTS"
  log "$tag: $(field "$line" per_s) transfers/s, p50 $(field "$line" p50_us) us, server $(field "$line" server_cpu) cores," \
      "others $(field "$line" other_cpu), load $load, O_DSYNC 4 KiB write $probe ms; fsyncs/s ${fsyncs_s:--} (perf ${perf_s:--}), commands/commit" \
      "${per_commit:--} (per perf fsync ${per_perf:--}); $forks; conserved=$(field "$verify" conserved)"
}

mark_last() { sed -i "\$ s/\$/\t$1/" "$RESULTS"; }
measure() {  # measure <name> <round>: run_one, again while other processes disturb it
  local attempt other tag
  for attempt in $(seq 0 "$RETRY_MAX"); do
    tag="$1-$2"; (( attempt == 0 )) || tag="$tag-again$attempt"
    run_one "$1" "$2" "$tag"
    other="$(tail -1 "$RESULTS" | cut -f8)"
    if [[ "$RETRY_BUSY_CORES" == 0 ]] || awk -v o="$other" -v l="$RETRY_BUSY_CORES" 'BEGIN { exit !(o < l) }'; then
      mark_last 1; return 0
    fi
    if (( attempt == RETRY_MAX )); then mark_last busy; return 0; fi
    mark_last 0
    log "$tag: other processes used $other cores during the run: left out, running it again"
  done
}

: >"$RESULTS"
for round in $(seq 1 "$RUNS"); do
  measure wallet-always "$round"
  measure redis-always "$round"
done
for round in $(seq 1 "$CONTEXT_RUNS"); do
  measure wallet-everysec "$round"
  measure wallet-no "$round"
  measure redis-everysec "$round"
  measure redis-always-norewrite "$round"
done

# --- table ---------------------------------------------------------------------
col() { awk -F'\t' -v n="$1" -v c="$2" '$1 == n && $19 != 0 { print $c }' "$RESULTS"; }  # kept runs
summary() {  # summary <name> <column>: median (min-max), or the one value
  local values
  mapfile -t values < <(col "$1" "$2" | grep -v '^-$' || true)
  [[ ${#values[@]} -gt 0 ]] || { echo "-"; return; }
  echo "$(median "${values[@]}") ($(spread "${values[@]}"))"
}
echo
echo "durable transfers: wallet-shard vs redis-server $(redis-server --version | awk '{print $3}'), $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "$REVISION; data on $FS; WAIT_IDLE_CORES=$WAIT_IDLE_CORES; $CONNECTIONS connections x pipeline $PIPELINE, $ACCOUNTS accounts, ${DURATION_S} s per run after ${WARMUP_S} s warm-up"
echo "every run (fsyncs/s and commands/commit from INFO persistence, wallet only; perf columns: fdatasync+fsync calls counted by perf;"
echo "dsync_ms: one 4 KiB O_DSYNC append on the same file system just before the run, mean of 200;"
echo "kept 0: left out of the medians, other processes used >= $RETRY_BUSY_CORES cores; busy: kept although they did):"
printf '%-22s %5s %9s %7s %7s %8s %6s %6s %5s %8s %9s %8s %9s %4s %-7s %-18s %-8s %s\n' run round per_s p50_us p99_us max_us srvcpu others load fsyncs/s cmds/comm perf_f/s cmds/perf ok errors forks dsync_ms kept
awk -F'\t' '{ printf "%-22s %5s %9s %7s %7s %8s %6s %6s %5s %8s %9s %8s %9s %4s %-7s %-18s %-8s %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $17, $18, $19 }' "$RESULTS"
echo
echo "median (min-max) per configuration, over the kept runs:"
printf '%-22s %-26s %-22s %-22s %-20s %-20s %-20s %s\n' run transfers/s p50_us p99_us fsyncs/s cmds/commit perf_fsyncs/s dsync_ms
for name in wallet-always redis-always wallet-everysec wallet-no redis-everysec redis-always-norewrite; do
  [[ -n "$(col "$name" 3)" ]] || continue
  printf '%-22s %-26s %-22s %-22s %-20s %-20s %-20s %s\n' "$name" "$(summary "$name" 3)" "$(summary "$name" 4)" \
    "$(summary "$name" 5)" "$(summary "$name" 10)" "$(summary "$name" 11)" "$(summary "$name" 12)" "$(summary "$name" 18)"
done
mapfile -t W < <(col wallet-always 3); mapfile -t R < <(col redis-always 3)
PAIRS=""
for i in "${!W[@]}"; do PAIRS="$PAIRS $(ratio "${W[$i]}" "${R[$i]:-0}")"; done
echo "wallet-always / redis-always: median ratio $(ratio "$(median "${W[@]}")" "$(median "${R[@]}")"); per round:$PAIRS (target >= 4)"
NOT_CONSERVED="$(awk -F'\t' '$14 != 1' "$RESULTS" | wc -l)"
echo "money conserved in $(awk -F'\t' '$14 == 1' "$RESULTS" | wc -l) of $(wc -l <"$RESULTS") runs"
[[ "$NOT_CONSERVED" == 0 ]]
