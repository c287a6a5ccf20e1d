#!/usr/bin/env bash
# run_end_to_end.sh — issue 6: transfers per second END TO END, from the client library
# (wallet-loadgen, src/client) through two routers into four shards, on one local
# cluster, in one run of the script.
#
#   benchmarks/run_end_to_end.sh                                  # everything, 3 rounds each
#   DURABLE=1 benchmarks/run_end_to_end.sh                        # shards --fsync=always
#   WAIT_IDLE_CORES=0.3 RETRY_BUSY_CORES=0.3 benchmarks/run_end_to_end.sh   # shared machine
#   RUNS=1 DURATION_S=4 PERF_S=0 benchmarks/run_end_to_end.sh     # a quick look
#
# Cluster (started here, on free ports, stopped by pid on any exit): a ZooKeeper
# (deploy/lib.sh), cluster "bench" bootstrapped with SHARDS shards and PARTITIONS
# partitions (wallet-cluster), shard-0 .. shard-<SHARDS-1> joined with --zk
# (--in_memory, or with DURABLE=1 --data_dir on DATA_ROOT and --fsync=always), and
# ROUTERS routers, each waited for until it sees every shard. ACCOUNTS accounts are
# opened and funded through the routers by `wallet-loadgen --setup`.
#
# Every measured run is one wallet-loadgen process (THREADS threads, each with its own
# client and CONNECTIONS connections to every router), WARMUP_S + DURATION_S, with
# --audit (wait for no transaction in doubt, sum every balance through a router: money
# conserved) unless AUDIT_EACH=0, and --json_out (kept). Kinds of run:
#   single   same-shard transfers (--cross_shard_share=0), one TRANSFER per call, closed
#            loop, for each "CONNECTIONSxPIPELINE" of SINGLE_CONFIGS
#   batch    same-shard transfers, TRANSFER.BATCH, for each "BATCHxPIPELINE" of
#            BATCH_CONFIGS (BATCH_CONNECTIONS connections)
#   cross    --cross_shard_share=S, all tcc or all saga (--tcc_share 1 / 0), for each
#            "S:MODE" of CROSS_MIXES, one TRANSFER per call, with the best single config
#   open     open loop at each rate of OPEN_RATES transfers/s (default: each fraction
#            of OPEN_FRACTIONS x the median throughput of the best single config),
#            same-shard, single TRANSFER calls, the best single config's connections;
#            latency from each call's INTENDED send time
#   ceiling  the generator alone against its --self_test_server (an in-process server
#            that answers +OK / an array of +OK), with the same settings as the best
#            single, the best batch and the open-loop runs (connections x ROUTERS, so the
#            same connections and calls in flight as against the ROUTERS routers)
# Rounds: RUNS rounds of single + batch + cross runs (the order of kinds rotating from
# round to round), then RUNS rounds of open + ceiling runs. Before each run: wait until
# no other benchmark runs (wallet-shard-bench, wallet-loadgen or a run_*.sh that is not
# this script; polled every 5 s, OTHER_WAIT_MAX_S at most), then common.sh's wait_idle.
# A run during which other processes used RETRY_BUSY_CORES cores or more is left out of
# the medians and measured again (RETRY_MAX times at most).
#
# CPU: utime + stime from /proc/<pid>/stat of each shard, each router, ZooKeeper and the
# generator, and the machine's busy time from /proc/stat, read 0.25 s after the warm-up
# ends and 0.5 s before the measured window ends (a steady window inside it). Reported
# as cores over that window and as CPU seconds per million transfers (cores / the
# run's transfers/s x 1 M). "others" = every other process on the machine.
#
# Profiles (PERF_S > 0, after the rounds, not in the figures): one run of the best
# single config and one of the best batch config during which `perf record -e
# cpu-clock -g` samples router-0 and shard-0 for PERF_S seconds; top-10 symbols
# (self time) printed, perf data kept.
#
# At the end: `wallet-loadgen --audit` once more, each shard's AUDIT (conserved 1, held
# 0, pending_credit 0, moved_out summed over shards = moved_in summed), TX.INDOUBT
# empty. Exit status: 0; 3 money not conserved (any audit); 4 a run had error replies;
# 5 a loadgen run failed otherwise.
#
# Settings (environment): SHARDS (4), ROUTERS (2), PARTITIONS (1024), ACCOUNTS
# (100000), DURATION_S (8), WARMUP_S (2), RUNS (3), DURABLE (0), THREADS (2),
# SINGLE_CONFIGS ("2x32 2x128 4x128"), BATCH_CONFIGS ("16x128 64x32 256x8 1024x2": with
# the defaults 16 384 transfers in flight each), BATCH_CONNECTIONS (2), CROSS_MIXES
# ("0.1:tcc 0.1:saga 0.5:tcc 0.5:saga"), OPEN_FRACTIONS ("0.25 0.5"), OPEN_RATES
# (computed), CEILING (1), AUDIT_EACH (1), PERF_S (4),
# SHARD_FLAGS (--idempotency_window_ms=30000, as in run_router_vs_direct.sh),
# ROUTER_FLAGS, LOADGEN_FLAGS (more flags for every loadgen run), DATA_ROOT (/tmp;
# with DURABLE=1 not a tmpfs unless ALLOW_TMPFS=1), BUILD_DIR (build-e2e, Release),
# SKIP_BUILD=1, WAIT_IDLE_CORES / WAIT_IDLE_MAX_S (common.sh), OTHER_WAIT_MAX_S (3600),
# RETRY_BUSY_CORES (0) / RETRY_MAX (2), OUT_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-e2e}"
[[ "$BUILD_DIR" == /* ]] || BUILD_DIR="$ROOT/$BUILD_DIR"
SHARDS="${SHARDS:-4}"
ROUTERS="${ROUTERS:-2}"
PARTITIONS="${PARTITIONS:-1024}"
ACCOUNTS="${ACCOUNTS:-100000}"
DURATION_S="${DURATION_S:-8}"
WARMUP_S="${WARMUP_S:-2}"
RUNS="${RUNS:-3}"
DURABLE="${DURABLE:-0}"
THREADS="${THREADS:-2}"
SINGLE_CONFIGS="${SINGLE_CONFIGS:-2x32 2x128 4x128}"
BATCH_CONFIGS="${BATCH_CONFIGS:-16x128 64x32 256x8 1024x2}"
BATCH_CONNECTIONS="${BATCH_CONNECTIONS:-2}"
CROSS_MIXES="${CROSS_MIXES:-0.1:tcc 0.1:saga 0.5:tcc 0.5:saga}"
OPEN_FRACTIONS="${OPEN_FRACTIONS:-0.25 0.5}"
OPEN_RATES="${OPEN_RATES:-}"
CEILING="${CEILING:-1}"
AUDIT_EACH="${AUDIT_EACH:-1}"
PERF_S="${PERF_S:-4}"
SHARD_FLAGS="${SHARD_FLAGS---idempotency_window_ms=30000}"
ROUTER_FLAGS="${ROUTER_FLAGS:-}"
LOADGEN_FLAGS="${LOADGEN_FLAGS:-}"
DATA_ROOT="${DATA_ROOT:-/tmp}"
ALLOW_TMPFS="${ALLOW_TMPFS:-0}"
SKIP_BUILD="${SKIP_BUILD:-0}"
WAIT_IDLE_CORES="${WAIT_IDLE_CORES:-0}"
WAIT_IDLE_MAX_S="${WAIT_IDLE_MAX_S:-600}"
OTHER_WAIT_MAX_S="${OTHER_WAIT_MAX_S:-3600}"
RETRY_BUSY_CORES="${RETRY_BUSY_CORES:-0}"
RETRY_MAX="${RETRY_MAX:-2}"
INITIAL_BALANCE=1000000

# shellcheck source=benchmarks/common.sh
source "$ROOT/benchmarks/common.sh"

(( DURATION_S >= 2 )) || { echo "DURATION_S must be >= 2" >&2; exit 2; }
for c in $SINGLE_CONFIGS; do [[ "$c" =~ ^[0-9]+x[0-9]+$ ]] || { echo "SINGLE_CONFIGS: CONNECTIONSxPIPELINE, not '$c'" >&2; exit 2; }; done
for c in $BATCH_CONFIGS; do [[ "$c" =~ ^[0-9]+x[0-9]+$ ]] || { echo "BATCH_CONFIGS: BATCHxPIPELINE, not '$c'" >&2; exit 2; }; done
for c in $CROSS_MIXES; do [[ "$c" =~ ^[0-9.]+:(tcc|saga)$ ]] || { echo "CROSS_MIXES: SHARE:tcc|saga, not '$c'" >&2; exit 2; }; done
command -v jq >/dev/null || { echo "missing jq" >&2; exit 1; }
[[ "$DURABLE" == 1 ]] || ALLOW_TMPFS=1  # no fsync measured: any file system will do
WORK_DIR="$(data_work_dir wallet-e2e-bench)" || exit 2
OUT_DIR="${OUT_DIR:-$WORK_DIR/out}"
mkdir -p "$OUT_DIR"
cleanup_on_exit "$WORK_DIR/data"

# --- build ---------------------------------------------------------------------
# (common.sh's build_benchmark_binaries would build wallet-shard-bench too, not used here.)
if [[ "$SKIP_BUILD" != 1 ]]; then
  log "building into $BUILD_DIR"
  if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
    cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DWALLET_BUILD_TESTS=OFF >/dev/null
  fi
  ninja -C "$BUILD_DIR" wallet-shard wallet-router wallet-cluster wallet-loadgen >/dev/null
fi
SKIP_BUILD=1 build_benchmark_binaries  # sets SHARD and REVISION only
[[ "$SKIP_BUILD" == 1 ]] || REVISION="${REVISION% (SKIP_BUILD=1: binaries not rebuilt)}"
ROUTER="$BUILD_DIR/src/router/wallet-router"
CLUSTER_TOOL="$BUILD_DIR/src/cluster/wallet-cluster"
LOADGEN="$BUILD_DIR/benchmarks/wallet-loadgen"
for tool in "$SHARD" "$ROUTER" "$CLUSTER_TOOL" "$LOADGEN"; do [[ -x "$tool" ]] || { echo "missing $tool" >&2; exit 1; }; done
for tool in java redis-cli ss findmnt; do
  command -v "$tool" >/dev/null || { echo "missing $tool (deploy/setup.sh installs it)" >&2; exit 1; }
done

HZ="$(getconf CLK_TCK)"
calc() { awk "BEGIN { $1 }"; }  # calc 'printf "%.2f", 1 / 3'

# --- other benchmarks ------------------------------------------------------------
# other_benchmarks: "pid args" of every wallet-shard-bench, wallet-loadgen or bash
# run_*.sh that is not this script or one of its descendants.
other_benchmarks() {
  ps -eo pid=,ppid=,args= | awk -v me="$$" '
    { p = $1; pp = $2; sub(/^ *[0-9]+ +[0-9]+ +/, ""); parent[p] = pp; args[p] = $0 }
    END {
      for (p in args) {
        q = p; mine = 0
        for (n = 0; n < 64 && q > 1; n++) { if (q == me) { mine = 1; break } q = parent[q] }
        if (mine) continue
        split(args[p], w, " "); prog = w[1]; sub(/.*\//, "", prog)
        if (prog == "wallet-shard-bench" || prog == "wallet-loadgen" ||
            (prog ~ /^(ba)?sh$/ && args[p] ~ /run_[A-Za-z0-9_]+\.sh/)) print p, substr(args[p], 1, 100)
      }
    }'
}
OTHER_WAITED_S=0
wait_turn() {  # no other benchmark running, then an idle machine (common.sh wait_idle)
  local start=$SECONDS others shown=0
  while others="$(other_benchmarks)"; [[ -n "$others" ]]; do
    if (( !shown )); then log "waiting for other benchmarks to end: $(head -2 <<<"$others" | tr '\n' ';')"; shown=1; fi
    if (( SECONDS - start > OTHER_WAIT_MAX_S )); then log "other benchmarks still running after ${OTHER_WAIT_MAX_S} s; measuring anyway"; break; fi
    sleep 5
  done
  OTHER_WAITED_S=$((OTHER_WAITED_S + SECONDS - start))
  wait_idle
}

# --- cluster -------------------------------------------------------------------

SHARD_PIDS=(); SHARD_PORTS=(); ROUTER_PIDS=(); ROUTER_PORTS=()
start_cluster() {
  local dir="$WORK_DIR/data" i storage routers_list=""
  mkdir -p "$dir/zookeeper"
  start_zookeeper "$dir/zookeeper"
  "$CLUSTER_TOOL" bootstrap --zk="127.0.0.1:$ZK_PORT" --cluster=bench --shards="$SHARDS" --partitions="$PARTITIONS" \
    >"$OUT_DIR/bootstrap.log" 2>&1 || { cat "$OUT_DIR/bootstrap.log" >&2; return 1; }
  for ((i = 0; i < SHARDS; i++)); do
    mkdir -p "$dir/shard-$i"
    if [[ "$DURABLE" == 1 ]]; then storage=(--data_dir="$dir/shard-$i" --fsync=always); else storage=(--in_memory); fi
    # shellcheck disable=SC2086  # SHARD_FLAGS is a list of flags
    start_shard "$OUT_DIR/shard-$i.log" "$dir/shard-$i.port" --zk="127.0.0.1:$ZK_PORT" --cluster=bench \
      --shard_id="shard-$i" "${storage[@]}" $SHARD_FLAGS
    SHARD_PIDS+=("$STARTED_PID"); SHARD_PORTS+=("$STARTED_PORT")
  done
  for ((i = 0; i < ROUTERS; i++)); do
    # shellcheck disable=SC2086
    start_server "$ROUTER" "$OUT_DIR/router-$i.log" "$dir/router-$i.port" --zk="127.0.0.1:$ZK_PORT" \
      --cluster=bench --router_id="router-$i" $ROUTER_FLAGS
    ROUTER_PIDS+=("$STARTED_PID"); ROUTER_PORTS+=("$STARTED_PORT")
    for _ in $(seq 1 300); do [[ "$(info_field "$STARTED_PORT" router live_shards)" == "$SHARDS" ]] && break; sleep 0.1; done
    [[ "$(info_field "$STARTED_PORT" router live_shards)" == "$SHARDS" ]] || { echo "router-$i does not see $SHARDS shards" >&2; return 1; }
    routers_list+="${routers_list:+,}127.0.0.1:$STARTED_PORT"
  done
  TARGET=(--zk="127.0.0.1:$ZK_PORT" --cluster=bench --routers="$routers_list")
  log "ZooKeeper pid $ZK_PID port $ZK_PORT; shards pids ${SHARD_PIDS[*]} ports ${SHARD_PORTS[*]};" \
      "routers pids ${ROUTER_PIDS[*]} ports ${ROUTER_PORTS[*]}"
}

# --- CPU -----------------------------------------------------------------------
ticks() {  # utime + stime of process $1 (0 when it is gone)
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || { echo 0; return; }
  awk '{ print $12 + $13 }' <<<"${stat##*) }"
}
# snap GEN_PID: "time busy_ticks gen r0 .. shard0 .. zk" (ticks)
snap() {
  local out p
  out="$(now_s) $(awk '/^cpu / {print $2+$3+$4+$7+$8+$9}' /proc/stat) $(ticks "$1")"
  for p in "${ROUTER_PIDS[@]}" "${SHARD_PIDS[@]}" "$ZK_PID"; do out+=" $(ticks "$p")"; done
  echo "$out"
}
# cores_of SNAP0 SNAP1: "wall gen r0 .. s0 .. zk others" in cores over the window
cores_of() {
  awk -v a="$1" -v b="$2" -v hz="$HZ" 'BEGIN {
    n = split(a, x, " "); split(b, y, " "); wall = y[1] - x[1]
    printf "%.3f", wall; known = 0
    for (i = 3; i <= n; i++) { c = (y[i] - x[i]) / hz / wall; known += c; printf " %.3f", c }
    o = (y[2] - x[2]) / hz / wall - known; printf " %.3f\n", o < 0 ? 0 : o }'
}

# --- one loadgen run -------------------------------------------------------------
# results.tsv: 1 kind 2 label 3 round 4 ok_per_s 5 p50_us 6 p99_us 7 p999_us 8 max_us
# 9 errors 10 gen_cores 11 routers_cores 12 shards_cores 13 others_cores 14 gen_s/M
# 15 routers_s/M 16 shards_s/M 17 total_s/M 18 late_sends 19 max_lag_us 20 audit
# 21 load 22 kept (1, or 0: left out)
RESULTS="$OUT_DIR/results.tsv"; : >"$RESULTS"
CPU_TSV="$OUT_DIR/cpu.tsv"; : >"$CPU_TSV"   # kind label round: cores of gen r0.. s0.. zk others
LG_STATUS=0
run_lg() {  # run_lg <kind> <label> <round> <cluster|self> FLAG...
  local kind=$1 label=$2 round=$3 where=$4 name lg s0 s1 c rc=0 json audit_flag=() target=() tput
  shift 4
  name="$kind-$label-r$round"
  [[ "$AUDIT_EACH" == 1 && "$where" == cluster ]] && audit_flag=(--audit)
  if [[ "$where" == cluster ]]; then target=("${TARGET[@]}"); else target=(--self_test_server); fi
  wait_turn
  local load; load="$(load1)"
  json="$OUT_DIR/$name.json"
  # shellcheck disable=SC2086  # LOADGEN_FLAGS is a list of flags
  "$LOADGEN" "${target[@]}" --accounts="$ACCOUNTS" --initial_balance="$INITIAL_BALANCE" --threads="$THREADS" \
    --duration_s="$DURATION_S" --warmup_s="$WARMUP_S" --progress=true --json_out="$json" "${audit_flag[@]}" \
    $LOADGEN_FLAGS "$@" >"$OUT_DIR/$name.out" 2>"$OUT_DIR/$name.err" &
  lg=$!
  STARTED_PIDS+=("$lg")
  until grep -q '^run:' "$OUT_DIR/$name.out" 2>/dev/null; do kill -0 "$lg" 2>/dev/null || break; sleep 0.01; done
  sleep "$(calc "print $WARMUP_S + 0.27")"
  s0="$(snap "$lg")"
  local perf_pids=()
  if [[ "$kind" == profile ]]; then
    perf record -e cpu-clock -g -o "$OUT_DIR/perf-$label-router-0.data" -p "${ROUTER_PIDS[0]}" -- sleep "$PERF_S" >/dev/null 2>&1 &
    perf_pids+=($!)
    perf record -e cpu-clock -g -o "$OUT_DIR/perf-$label-shard-0.data" -p "${SHARD_PIDS[0]}" -- sleep "$PERF_S" >/dev/null 2>&1 &
    perf_pids+=($!)
  fi
  sleep "$(calc "print $DURATION_S - 0.77")"
  s1="$(snap "$lg")"
  wait "$lg" || rc=$?
  local kept=() p
  for p in "${STARTED_PIDS[@]}"; do [[ "$p" == "$lg" ]] || kept+=("$p"); done
  STARTED_PIDS=("${kept[@]}")
  for p in "${perf_pids[@]}"; do wait "$p" || true; done
  if [[ ! -s "$json" ]]; then
    log "$name: wallet-loadgen exit $rc, no JSON:"; tail -5 "$OUT_DIR/$name.err" >&2; LG_STATUS=5; return 0
  fi
  (( rc == 0 )) || { log "$name: wallet-loadgen exit status $rc (see $OUT_DIR/$name.out)"; LG_STATUS=5; }
  c="$(cores_of "$s0" "$s1")"
  echo "$kind $label $round $c" >>"$CPU_TSV"
  tput="$(jq -r '.throughput_per_s' "$json")"
  # cores: wall gen r0..r(R-1) s0..s(S-1) zk others
  awk -v c="$c" -v R="$ROUTERS" -v S="$SHARDS" -v t="$tput" -v kind="$kind" -v label="$label" -v round="$round" \
      -v load="$load" -v j="$(jq -r '[.latency_us.p50, .latency_us.p99, .latency_us.p999, .latency_us.max,
          (if (.errors | length) == 0 then "none" else (.errors | to_entries | map("\(.key):\(.value)") | join(",")) end),
          (.late_sends // "-"), (.max_lag_us // "-"),
          (if .audit == null then "-" elif .audit.passed then "passed" else "FAILED" end)] | map(tostring) | join("\t")' "$json")" '
    BEGIN {
      n = split(c, x, " "); gen = x[2]; r = 0; s = 0
      for (i = 0; i < R; i++) r += x[3 + i]
      for (i = 0; i < S; i++) s += x[3 + R + i]
      others = x[n]
      split(j, f, "\t")
      pm = (t > 0) ? 1e6 / t : 0
      printf "%s\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%s\t%s\t%s\t%s\t1\n",
        kind, label, round, t, f[1], f[2], f[3], f[4], f[5], gen, r, s, others, gen * pm, r * pm, s * pm,
        (gen + r + s) * pm, f[6], f[7], f[8], load
    }' >>"$RESULTS"
  log "$name: $(printf '%.0f' "$tput") transfers/s, p50 $(cut -f5 <<<"$(tail -1 "$RESULTS")") us," \
      "p99 $(cut -f6 <<<"$(tail -1 "$RESULTS")") us, errors $(cut -f9 <<<"$(tail -1 "$RESULTS")"), audit $(cut -f20 <<<"$(tail -1 "$RESULTS")");" \
      "cores gen $(cut -f10 <<<"$(tail -1 "$RESULTS")") routers $(cut -f11 <<<"$(tail -1 "$RESULTS")")" \
      "shards $(cut -f12 <<<"$(tail -1 "$RESULTS")") others $(cut -f13 <<<"$(tail -1 "$RESULTS")"); load $load"
}
measure() {  # measure <kind> <label> <round> <cluster|self> FLAG...: run_lg, again while disturbed
  local attempt others
  for attempt in $(seq 1 "$RETRY_MAX"); do
    run_lg "$@"
    others="$(tail -1 "$RESULTS" | cut -f13)"
    awk -v o="$others" -v l="$RETRY_BUSY_CORES" 'BEGIN { exit !(l > 0 && o >= l) }' || return 0
    sed -i '$ s/\t1$/\t0/' "$RESULTS"
    log "$1 $2 round $3: other processes used $others cores: left out, measured again"
  done
  run_lg "$@"
}

col() { awk -F'\t' -v k="$1" -v l="$2" -v c="$3" '$1 == k && $2 == l && $22 == 1 { print $c }' "$RESULTS"; }
med() { local v; mapfile -t v < <(col "$1" "$2" "$3"); (( ${#v[@]} )) && median "${v[@]}" || echo 0; }
summary() { local v; mapfile -t v < <(col "$1" "$2" "$3"); (( ${#v[@]} )) && echo "$(median "${v[@]}") ($(spread "${v[@]}"))" || echo "-"; }
best_of() {  # best_of <kind> <labels...>: the label with the highest median transfers/s
  local kind=$1 best="" bv=-1 l v
  shift
  for l in "$@"; do v="$(med "$kind" "$l" 4)"; if awk -v a="$v" -v b="$bv" 'BEGIN { exit !(a > b) }'; then best=$l; bv=$v; fi; done
  echo "$best"
}

single_flags() { local c=${1%x*} p=${1#*x}; echo "--cross_shard_share=0 --connections=$c --pipeline=$p"; }
batch_flags() { local b=${1%x*} p=${1#*x}; echo "--cross_shard_share=0 --connections=$BATCH_CONNECTIONS --pipeline=$p --batch=$b"; }
cross_flags() {  # cross_flags <share:mode> <single config>
  local share=${1%:*} mode=${1#*:} c=${2%x*} p=${2#*x} tcc=1
  [[ "$mode" == tcc ]] || tcc=0
  echo "--cross_shard_share=$share --tcc_share=$tcc --connections=$c --pipeline=$p"
}

# --- the run -----------------------------------------------------------------------
start_cluster
log "setup: $ACCOUNTS accounts through the routers"
"$LOADGEN" "${TARGET[@]}" --accounts="$ACCOUNTS" --initial_balance="$INITIAL_BALANCE" --setup --duration_s=0 \
  --json_out="$OUT_DIR/setup.json" >"$OUT_DIR/setup.out" 2>"$OUT_DIR/setup.err" || {
    echo "setup failed:" >&2; tail -5 "$OUT_DIR/setup.out" "$OUT_DIR/setup.err" >&2; exit 1; }
log "setup: $(grep -m1 -i 'setup' "$OUT_DIR/setup.out" || true)"

# The cross-shard runs use the best single config; it is known only after round 1's
# single runs, so within each round the single runs come first and the rotation is
# among the kinds after them.
CROSS_CONFIG="${CROSS_CONFIG:-}"
for round in $(seq 1 "$RUNS"); do
  # shellcheck disable=SC2086,SC2046
  for cfg in $SINGLE_CONFIGS; do measure single "$cfg" "$round" cluster $(single_flags "$cfg"); done
  # shellcheck disable=SC2086
  cc="${CROSS_CONFIG:-$(best_of single $SINGLE_CONFIGS)}"
  if (( round % 2 == 1 )); then order=(batch cross); else order=(cross batch); fi
  for kind in "${order[@]}"; do
    if [[ "$kind" == batch ]]; then
      # shellcheck disable=SC2046
      for cfg in $BATCH_CONFIGS; do measure batch "$cfg" "$round" cluster $(batch_flags "$cfg"); done
    else
      # shellcheck disable=SC2046
      for mix in $CROSS_MIXES; do measure cross "$mix" "$round" cluster $(cross_flags "$mix" "$cc"); done
    fi
  done
done
# shellcheck disable=SC2086
BEST_SINGLE="$(best_of single $SINGLE_CONFIGS)"
# shellcheck disable=SC2086
BEST_BATCH="$(best_of batch $BATCH_CONFIGS)"
CROSS_CONFIG="${CROSS_CONFIG:-$BEST_SINGLE}"
BEST_SINGLE_TPUT="$(med single "$BEST_SINGLE" 4)"
if [[ -z "$OPEN_RATES" ]]; then
  for f in $OPEN_FRACTIONS; do OPEN_RATES+="${OPEN_RATES:+ }$(calc "printf \"%d\", $f * $BEST_SINGLE_TPUT")"; done
fi
log "best single config $BEST_SINGLE ($BEST_SINGLE_TPUT/s), best batch config $BEST_BATCH; open loop at $OPEN_RATES/s"
oc=${BEST_SINGLE%x*}; sp=${BEST_SINGLE#*x}; bb=${BEST_BATCH%x*}; bp=${BEST_BATCH#*x}
for round in $(seq 1 "$RUNS"); do
  for rate in $OPEN_RATES; do
    measure open "rate$rate" "$round" cluster --cross_shard_share=0 --connections="$oc" --rate="$rate"
  done
  if [[ "$CEILING" == 1 ]]; then
    measure ceiling "single-$BEST_SINGLE" "$round" self --connections=$((oc * ROUTERS)) --pipeline="$sp"
    measure ceiling "batch-$BEST_BATCH" "$round" self --connections=$((BATCH_CONNECTIONS * ROUTERS)) --pipeline="$bp" --batch="$bb"
    for rate in $OPEN_RATES; do
      measure ceiling "open-rate$rate" "$round" self --connections=$((oc * ROUTERS)) --rate="$rate"
    done
  fi
done
if (( PERF_S > 0 )) && command -v perf >/dev/null; then
  # shellcheck disable=SC2046
  run_lg profile "single-$BEST_SINGLE" 1 cluster $(single_flags "$BEST_SINGLE")
  # shellcheck disable=SC2046
  run_lg profile "batch-$BEST_BATCH" 1 cluster $(batch_flags "$BEST_BATCH")
fi

# --- final conservation check ----------------------------------------------------------
log "final audit"
FINAL_OK=1
"$LOADGEN" "${TARGET[@]}" --accounts="$ACCOUNTS" --initial_balance="$INITIAL_BALANCE" --audit --duration_s=0 \
  --json_out="$OUT_DIR/final-audit.json" >"$OUT_DIR/final-audit.out" 2>"$OUT_DIR/final-audit.err" || FINAL_OK=0
[[ "$(jq -r '.audit.passed' "$OUT_DIR/final-audit.json" 2>/dev/null)" == true ]] || FINAL_OK=0
moved_in=0; moved_out=0; SHARD_AUDITS=""
for ((i = 0; i < SHARDS; i++)); do
  audit="$(redis-cli -p "${SHARD_PORTS[$i]}" AUDIT | paste -sd' ' -)"
  echo "shard-$i AUDIT: $audit" >>"$OUT_DIR/shard-audit.txt"
  value() { awk -v k="$1" '{ for (j = 1; j < NF; j += 2) if ($j == k) print $(j + 1) }' <<<"$audit"; }
  moved_in=$((moved_in + $(value moved_in))); moved_out=$((moved_out + $(value moved_out)))
  SHARD_AUDITS+="shard-$i conserved $(value conserved) held $(value held) pending_credit $(value pending_credit); "
  [[ "$(value conserved)" == 1 && "$(value held)" == 0 && "$(value pending_credit)" == 0 ]] || FINAL_OK=0
done
[[ "$moved_in" == "$moved_out" ]] || FINAL_OK=0
INDOUBT="$(redis-cli -p "${ROUTER_PORTS[0]}" TX.INDOUBT 0 COUNT 10000 | grep -c . || true)"
[[ "$INDOUBT" == 0 ]] || FINAL_OK=0
for ((i = 0; i < ROUTERS; i++)); do redis-cli -p "${ROUTER_PORTS[$i]}" INFO >"$OUT_DIR/router-$i-info.txt" 2>&1 || true; done
for ((i = 0; i < SHARDS; i++)); do redis-cli -p "${SHARD_PORTS[$i]}" INFO >"$OUT_DIR/shard-$i-info.txt" 2>&1 || true; done
stop_started

# --- report ------------------------------------------------------------------------
echo
echo "end to end: wallet-loadgen -> $ROUTERS routers -> $SHARDS shards, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "$REVISION; build $BUILD_DIR; $SHARDS shards ($([[ "$DURABLE" == 1 ]] && echo "--fsync=always, data on $(describe_fs "$WORK_DIR")" || echo --in_memory)), $PARTITIONS partitions;" \
     "SHARD_FLAGS='$SHARD_FLAGS' ROUTER_FLAGS='$ROUTER_FLAGS' LOADGEN_FLAGS='$LOADGEN_FLAGS'"
echo "$ACCOUNTS accounts, $THREADS generator threads, ${DURATION_S} s per run after ${WARMUP_S} s warm-up, $RUNS rounds;" \
     "WAIT_IDLE_CORES=$WAIT_IDLE_CORES RETRY_BUSY_CORES=$RETRY_BUSY_CORES; waited ${OTHER_WAITED_S} s for other benchmarks"
echo "every run (cores over a steady window inside the measured one; s/M: CPU seconds per million transfers; kept 0: left out):"
printf '%-8s %-16s %2s %9s %8s %8s %8s %9s %-24s %5s %5s %5s %5s %6s %6s %6s %6s %7s %8s %-6s %5s %s\n' \
  kind label r ok_per_s p50_us p99_us p999_us max_us errors gen rout shard other gen/M rout/M shrd/M tot/M late lag_us audit load kept
awk -F'\t' '{ printf "%-8s %-16s %2s %9s %8s %8s %8s %9s %-24s %5s %5s %5s %5s %6s %6s %6s %6s %7s %8s %-6s %5s %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22 }' "$RESULTS"
echo
echo "median (min-max) over the kept runs:"
printf '%-8s %-16s %-26s %-22s %-24s %-16s %-16s %-16s %-16s %-16s %s\n' kind label transfers/s p50_us p99_us \
  gen_s/M routers_s/M shards_s/M total_s/M gen_cores others_cores
awk -F'\t' '$22 == 1 && !seen[$1 FS $2]++ { print $1 "\t" $2 }' "$RESULTS" | while IFS=$'\t' read -r k l; do
  printf '%-8s %-16s %-26s %-22s %-24s %-16s %-16s %-16s %-16s %-16s %s\n' "$k" "$l" "$(summary "$k" "$l" 4)" \
    "$(summary "$k" "$l" 5)" "$(summary "$k" "$l" 6)" "$(summary "$k" "$l" 14)" "$(summary "$k" "$l" 15)" \
    "$(summary "$k" "$l" 16)" "$(summary "$k" "$l" 17)" "$(summary "$k" "$l" 10)" "$(summary "$k" "$l" 13)"
done
echo
echo "per process, median cores over the window (gen, router-0.., shard-0.., zookeeper, others):"
awk '{ print $1 " " $2 }' "$CPU_TSV" | awk '!seen[$0]++' | while read -r k l; do
  line="$(printf '%-26s' "$k $l")"
  nf="$(awk -v k="$k" -v l="$l" '$1 == k && $2 == l { print NF; exit }' "$CPU_TSV")"
  for ((i = 5; i <= nf; i++)); do
    mapfile -t v < <(awk -v k="$k" -v l="$l" -v i="$i" '$1 == k && $2 == l { print $i }' "$CPU_TSV")
    line+="$(printf ' %5.2f' "$(median "${v[@]}")")"
  done
  echo "$line"
done
echo
echo "best single config: $BEST_SINGLE (connections x pipeline per thread per router), median $BEST_SINGLE_TPUT/s;" \
     "best batch config: $BEST_BATCH (batch x pipeline), median $(med batch "$BEST_BATCH" 4)/s; target 1 000 000/s"
echo "open loop at ${OPEN_RATES// //s, }/s (OPEN_FRACTIONS '$OPEN_FRACTIONS' x the best single median unless OPEN_RATES was given)"
if (( PERF_S > 0 )); then
  for f in "$OUT_DIR"/perf-*.data; do
    [[ -s "$f" ]] || continue
    echo
    echo "top 10 symbols (self), $(basename "$f" .data):"
    perf report -i "$f" --no-children -g none --sort dso,sym --stdio >"${f%.data}.txt" 2>/dev/null || true
    grep -E '^ +[0-9.]+%' "${f%.data}.txt" | head -10 || true
  done
fi
echo
status=0
echo "money: final audit through the routers: $(jq -r '.audit | "passed \(.passed), sum \(.sum_available + .sum_held) expected \(.expected), held \(.sum_held), in doubt \(.in_doubt_left)"' "$OUT_DIR/final-audit.json" 2>/dev/null);" \
     "$SHARD_AUDITS moved_out total $moved_out, moved_in total $moved_in; TX.INDOUBT $INDOUBT;" \
     "per-run audits: $(awk -F'\t' '$20 == "passed"' "$RESULTS" | wc -l) passed, $(awk -F'\t' '$20 == "FAILED"' "$RESULTS" | wc -l) failed"
if [[ "$FINAL_OK" != 1 ]] || awk -F'\t' '$20 == "FAILED" { f = 1 } END { exit !f }' "$RESULTS"; then
  echo "MONEY NOT CONSERVED (or a transaction left in doubt): see $OUT_DIR"; status=3
elif awk -F'\t' '$9 != "none" { f = 1 } END { exit !f }' "$RESULTS"; then
  echo "some runs had error replies (column errors): their transfers/s count only the OK ones"; status=4
elif [[ "$LG_STATUS" != 0 ]]; then
  status=$LG_STATUS
fi
exit "$status"
