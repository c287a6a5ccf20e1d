#!/usr/bin/env bash
# run_recovery.sh — how fast a durable wallet-shard comes back after kill -9.
#
#   benchmarks/run_recovery.sh                           # both parts, 3 restarts each, hot and cold
#   PARTS=replay RESTARTS=5 SKIP_BUILD=1 benchmarks/run_recovery.sh
#   DATA_ROOT=/work/tmp BIG_ACCOUNTS=1000000 benchmarks/run_recovery.sh
#
# Part "replay" (log replay rate, no snapshot): a fresh shard funds REPLAY_ACCOUNTS
# accounts (driver phase "setup": OPEN + DEPOSIT each) and takes REPLAY_TRANSFERS
# transfers (driver phase "run" with --requests), so its log holds
# 2 x REPLAY_ACCOUNTS + REPLAY_TRANSFERS events and no snapshot exists.
#
# Part "big" (snapshot + log): a fresh shard opens BIG_ACCOUNTS accounts (driver phase
# "open"), takes a snapshot (SNAPSHOT, then INFO persistence until
# snapshot_in_progress:0 and snapshot_last_seq covers the opens), then funds the first
# FUNDED_ACCOUNTS of them (OPEN again is a no-op, DEPOSIT) and takes BIG_TRANSFERS
# transfers among them: those events are in the log after the snapshot.
#
# Then, RESTARTS times: kill -9 the shard, (with COLD=1, also a second restart after
# dropping the folder's files from the page cache: sync, then dd iflag=nocache, checked
# with fincore), start it again on the same folder and time exec -> --ready_file
# (polled every 5 ms), read the "recovered from" log line (snapshot load ms, events
# replayed, replay ms, events/s) and INFO persistence, check that the state reaches
# the last sequence number INFO showed before the kill, and money conservation over the funded
# accounts (driver phase "verify"). Automatic snapshots are off (--snapshot_log_bytes=0
# --snapshot_interval_s=0) so that the folder holds exactly what is described above.
#
# Everything runs in a new folder under DATA_ROOT (default /tmp; a tmpfs is refused
# unless ALLOW_TMPFS=1), deleted at the end; the shard logs and driver output are kept
# in $OUT_DIR (default: a new folder under /tmp).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-bench}"
PARTS="${PARTS:-replay,big}"
REPLAY_ACCOUNTS="${REPLAY_ACCOUNTS:-100000}"
REPLAY_TRANSFERS="${REPLAY_TRANSFERS:-5000000}"
BIG_ACCOUNTS="${BIG_ACCOUNTS:-10000000}"
FUNDED_ACCOUNTS="${FUNDED_ACCOUNTS:-100000}"
BIG_TRANSFERS="${BIG_TRANSFERS:-1000000}"
RESTARTS="${RESTARTS:-3}"
COLD="${COLD:-1}"
GEN_FSYNC="${GEN_FSYNC:-always}"   # --fsync while the log is written and after restarts
SHARD_FLAGS="${SHARD_FLAGS:-}"     # more wallet-shard flags
SKIP_BUILD="${SKIP_BUILD:-0}"
WAIT_IDLE_CORES="${WAIT_IDLE_CORES:-0}"
START_TIMEOUT_S="${START_TIMEOUT_S:-300}"

# shellcheck source=benchmarks/common.sh
source "$ROOT/benchmarks/common.sh"

WORK_DIR="$(data_work_dir wallet-recovery)" || exit 2
OUT_DIR="${OUT_DIR:-$(mktemp -d /tmp/wallet-recovery-out.XXXXXX)}"
mkdir -p "$OUT_DIR"
cleanup_on_exit "$WORK_DIR"

build_benchmark_binaries
for tool in "$SHARD" "$DRIVER"; do [[ -x "$tool" ]] || { echo "missing $tool" >&2; exit 1; }; done
for tool in redis-cli findmnt fincore; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
FS="$(describe_fs "$WORK_DIR")"
log "data on $FS: $WORK_DIR"

SHARD_PID=""
SHARD_PORT=""
shard_flags() {  # the flags of every start on folder $1
  # shellcheck disable=SC2086
  echo --data_dir="$1" --fsync="$GEN_FSYNC" --snapshot_log_bytes=0 --snapshot_interval_s=0 $SHARD_FLAGS
}
start() {  # start <folder> <log>
  # shellcheck disable=SC2046
  start_shard "$2" "$WORK_DIR/ready" $(shard_flags "$1")
  SHARD_PID=$STARTED_PID; SHARD_PORT=$STARTED_PORT
}
driver() {  # driver <name> <accounts> <phases> [flag...]: prints the RESULT lines, fails on errors
  local name=$1 accounts=$2 phases=$3 line
  shift 3
  "$DRIVER" --target=wallet --port="$SHARD_PORT" --server_pid="$SHARD_PID" --phases="$phases" \
    --connections=50 --pipeline=32 --accounts="$accounts" --first_account=0 "$@" \
    >"$OUT_DIR/$name.out" 2>"$OUT_DIR/$name.err" || {
      echo "driver $name failed:" >&2; tail -5 "$OUT_DIR/$name.err" >&2; return 1; }
  while read -r line; do
    if [[ "$(field "$line" errors)" != none ]]; then echo "driver $name: errors: $line" >&2; return 1; fi
  done < <(grep '^RESULT' "$OUT_DIR/$name.out")
  grep '^RESULT' "$OUT_DIR/$name.out"
}
persistence() { info_field "$SHARD_PORT" persistence "$1"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
resident_bytes() { fincore -b -n -o RES "$1"/* 2>/dev/null | awk '{ n += $1 } END { print n + 0 }'; }

RESULTS="$OUT_DIR/restarts.tsv"
: >"$RESULTS"
# restart <part> <folder> <funded accounts> <i> <hot|cold>: kill -9, restart, and append:
# part i cache wall_ms load_ms events replay_ms events/s seq_ok conserved resident_before
# load1 accounts segments
restart() {
  local part=$1 dir=$2 funded=$3 i=$4 cache=$5 tag="$1-$4-$5" t0 wall line verify seq
  local load_ms events segments replay_ms rate state_seq resident
  # The last event before the kill (the shard may have logged one since the previous
  # restart: a collection of idempotency records older than the window).
  seq="$(persistence log_last_seq)"
  stop_pid "$SHARD_PID" KILL
  if [[ "$cache" == cold ]]; then
    sync "$dir"/*
    for file in "$dir"/*; do dd if="$file" iflag=nocache count=0 status=none; done
  fi
  resident="$(resident_bytes "$dir")"
  wait_idle
  local load1
  load1="$(cut -d' ' -f1 /proc/loadavg)"
  t0="$(now_ms)"
  start "$dir" "$OUT_DIR/$tag.shard.log"
  wall=$(( $(now_ms) - t0 ))
  line="$(grep -m1 'recovered from' "$OUT_DIR/$tag.shard.log")"
  load_ms="$(sed -n 's/.* loaded in \([0-9]*\) ms.*/\1/p' <<<"$line")"
  read -r events segments replay_ms < <(sed -n 's/.*replayed \([0-9]*\) events from \([0-9]*\) segment(s) in \([0-9]*\) ms.*/\1 \2 \3/p' <<<"$line")
  rate="$(sed -n 's/.*(\([0-9]*\) events\/s).*/\1/p' <<<"$line")"
  state_seq="$(sed -n 's/.*state at seq \([0-9]*\).*/\1/p' <<<"$line")"
  # INFO persistence must tell the same story as the log line.
  if [[ "$(persistence recovery_events_replayed)" != "$events" || "$(persistence recovery_replay_ms)" != "$replay_ms" ||
        "$(persistence recovery_snapshot_load_ms)" != "${load_ms:-0}" ]]; then
    echo "INFO persistence disagrees with the log line: $line" >&2; return 1
  fi
  verify="$(driver "$tag-verify" "$funded" verify)"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$part" "$i" "$cache" "$wall" "${load_ms:-0}" \
    "$events" "$replay_ms" "${rate:-n/a}" "$( (( state_seq >= seq )) && echo 1 || echo 0)" \
    "$(field "$verify" conserved)" "$resident" "$load1" "$(info_field "$SHARD_PORT" keyspace accounts)" \
    "$segments" >>"$RESULTS"
  log "$tag: ready after $wall ms (load $load1; $resident bytes of the folder cached before); $line"
  (( state_seq >= seq )) || { echo "state at seq $state_seq after restart, $seq before the kill" >&2; return 1; }
  [[ "$(field "$verify" conserved)" == 1 ]] || { echo "money not conserved after restart: $verify" >&2; return 1; }
}
restarts() {  # restarts <part> <folder> <funded accounts>
  local i
  for i in $(seq 1 "$RESTARTS"); do
    restart "$1" "$2" "$3" "$i" hot
    [[ "$COLD" == 1 ]] && restart "$1" "$2" "$3" "$i" cold
  done
  stop_pid "$SHARD_PID"
}

declare -A FACTS
# --- part "replay": log only -----------------------------------------------------
if [[ ",$PARTS," == *,replay,* ]]; then
  dir="$WORK_DIR/replay"
  log "replay: $REPLAY_ACCOUNTS accounts funded, then $REPLAY_TRANSFERS transfers (--fsync=$GEN_FSYNC)"
  start "$dir" "$OUT_DIR/replay-load.shard.log"
  driver replay-setup "$REPLAY_ACCOUNTS" setup >/dev/null
  line="$(driver replay-run "$REPLAY_ACCOUNTS" run --requests="$REPLAY_TRANSFERS")"
  log "  $line"
  FACTS[replay_events]="$(persistence log_last_seq)"
  FACTS[replay_log_bytes]="$(du -cb "$dir"/log-* | tail -1 | cut -f1)"
  FACTS[replay_segments]="$(find "$dir" -name 'log-*.wlog' | wc -l)"
  restarts replay "$dir" "$REPLAY_ACCOUNTS"
  rm -rf "$dir"
fi

# --- part "big": snapshot of BIG_ACCOUNTS accounts + log after it --------------------
if [[ ",$PARTS," == *,big,* ]]; then
  dir="$WORK_DIR/big"
  log "big: open $BIG_ACCOUNTS accounts"
  start "$dir" "$OUT_DIR/big-load.shard.log"
  log "  $(driver big-open "$BIG_ACCOUNTS" open)"
  opened_seq="$(persistence log_last_seq)"
  log "  SNAPSHOT at seq $opened_seq: $(redis-cli -p "$SHARD_PORT" SNAPSHOT)"
  t0="$(now_ms)"
  until [[ "$(persistence snapshot_in_progress)" == 0 && "$(persistence snapshot_last_seq)" -ge "$opened_seq" ]]; do
    [[ -z "$(persistence snapshot_last_error)" ]] || { echo "snapshot failed: $(persistence snapshot_last_error)" >&2; exit 1; }
    (( $(now_ms) - t0 < 600000 )) || { echo "snapshot not done after 600 s" >&2; exit 1; }
    sleep 0.1
  done
  FACTS[big_snapshot_seq]="$(persistence snapshot_last_seq)"
  FACTS[big_snapshot_ms]="$(persistence snapshot_last_duration_ms)"
  snapshot_file="$(find "$dir" -name 'snapshot-*.snap' | sort | tail -1)"
  FACTS[big_snapshot_bytes]="$(stat -c %s "$snapshot_file")"
  log "  snapshot $snapshot_file: ${FACTS[big_snapshot_bytes]} bytes, written in ${FACTS[big_snapshot_ms]} ms"
  log "  fund $FUNDED_ACCOUNTS accounts, then $BIG_TRANSFERS transfers"
  driver big-setup "$FUNDED_ACCOUNTS" setup >/dev/null
  log "  $(driver big-run "$FUNDED_ACCOUNTS" run --requests="$BIG_TRANSFERS")"
  FACTS[big_last_seq]="$(persistence log_last_seq)"
  FACTS[big_log_bytes]="$(du -cb "$dir"/log-* | tail -1 | cut -f1)"
  FACTS[big_files]="$(cd "$dir" && find . -type f -printf '%f %s\n' | sort | tr '\n' ';')"
  restarts big "$dir" "$FUNDED_ACCOUNTS"
  rm -rf "$dir"
fi

# --- table -------------------------------------------------------------------------
echo
echo "wallet-shard recovery after kill -9, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "$REVISION; data on $FS; --fsync=$GEN_FSYNC; WAIT_IDLE_CORES=$WAIT_IDLE_CORES; cold = the folder's files dropped from the page cache before the restart"
if [[ -n "${FACTS[replay_events]:-}" ]]; then
  echo "replay: log of ${FACTS[replay_events]} events ($REPLAY_ACCOUNTS OPEN + $REPLAY_ACCOUNTS DEPOSIT + $REPLAY_TRANSFERS TRANSFER), ${FACTS[replay_log_bytes]} bytes in ${FACTS[replay_segments]} segment(s), no snapshot"
fi
if [[ -n "${FACTS[big_snapshot_seq]:-}" ]]; then
  echo "big: snapshot at seq ${FACTS[big_snapshot_seq]} ($BIG_ACCOUNTS accounts): ${FACTS[big_snapshot_bytes]} bytes = $(awk -v b="${FACTS[big_snapshot_bytes]}" -v n="$BIG_ACCOUNTS" 'BEGIN { printf "%.1f", b / n }') bytes/account, written in ${FACTS[big_snapshot_ms]} ms;" \
       "log up to seq ${FACTS[big_last_seq]} ($(( FACTS[big_last_seq] - FACTS[big_snapshot_seq] )) events after the snapshot; log files ${FACTS[big_log_bytes]} bytes)"
  echo "big: files before the restarts: ${FACTS[big_files]}"
fi
printf '%-7s %3s %-5s %9s %12s %10s %10s %11s %6s %9s %13s %5s %s\n' part i cache ready_ms snap_load_ms events replay_ms events/s seq_ok conserved cached_before load accounts
awk -F'\t' '{ printf "%-7s %3s %-5s %9s %12s %10s %10s %11s %6s %9s %13s %5s %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13 }' "$RESULTS"
echo
echo "median (min-max):"
for part in replay big; do
  for cache in hot cold; do
    mapfile -t wall < <(awk -F'\t' -v p="$part" -v c="$cache" '$1 == p && $3 == c { print $4 }' "$RESULTS")
    [[ ${#wall[@]} -gt 0 ]] || continue
    mapfile -t snap < <(awk -F'\t' -v p="$part" -v c="$cache" '$1 == p && $3 == c { print $5 }' "$RESULTS")
    mapfile -t replay < <(awk -F'\t' -v p="$part" -v c="$cache" '$1 == p && $3 == c { print $7 }' "$RESULTS")
    mapfile -t rates < <(awk -F'\t' -v p="$part" -v c="$cache" '$1 == p && $3 == c { print $8 }' "$RESULTS")
    echo "$part $cache: ready after $(median "${wall[@]}") ms ($(spread "${wall[@]}")); snapshot load $(median "${snap[@]}") ms ($(spread "${snap[@]}"));" \
         "replay $(median "${replay[@]}") ms ($(spread "${replay[@]}")) = $(median "${rates[@]}") events/s ($(spread "${rates[@]}"))"
  done
done
echo "targets: replay >= 3000000 events/s; big shard ready in < 5000 ms"
