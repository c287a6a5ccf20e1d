#!/usr/bin/env bash
# The product's main job, for now on one shard: build, start wallet-shard on a free
# port with a data folder, open and fund accounts, drive a pipelined transfer
# workload through it with the Redis tools (redis-cli --pipe), print throughput,
# balances and the money audit, then kill -9 the shard, restart it on its folder and
# check that it came back with the same state (and that the history tool agrees).
# Later issues widen this to a whole cluster.
#
#   deploy/demo.sh                    # 1,000 accounts, 200,000 transfers
#   ACCOUNTS=10000 TRANSFERS=1000000 deploy/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ACCOUNTS="${ACCOUNTS:-1000}"
TRANSFERS="${TRANSFERS:-200000}"
bash deploy/build.sh >/dev/null
SHARD=build/src/shard/wallet-shard
HISTORY=build/src/shard/wallet-history

WORK="$(mktemp -d -t wallet-demo.XXXXXX)"
SHARD_PID=""
cleanup() {
  if [[ -n "$SHARD_PID" ]] && kill -0 "$SHARD_PID" 2>/dev/null; then
    kill -TERM "$SHARD_PID" 2>/dev/null || true
    wait "$SHARD_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

"$SHARD" --port=0 --ready_file="$WORK/port" --data_dir="$WORK/data" >"$WORK/shard.log" 2>&1 &
SHARD_PID=$!
for _ in $(seq 1 100); do [[ -s "$WORK/port" ]] && break; sleep 0.05; done
[[ -s "$WORK/port" ]] || { echo "demo: shard did not start:"; cat "$WORK/shard.log"; exit 1; }
PORT="$(cat "$WORK/port")"
CLI=(redis-cli -p "$PORT")
echo "demo: wallet-shard pid $SHARD_PID listening on 127.0.0.1:$PORT"

# Accounts 1..N in USD, each funded with 1,000,000 minor units ($10,000.00).
awk -v n="$ACCOUNTS" 'BEGIN { for (i = 1; i <= n; i++) {
  printf "OPEN %d USD\r\nDEPOSIT %d 1000000 fund-%d\r\n", i, i, i } }' >"$WORK/setup.txt"
"${CLI[@]}" --pipe <"$WORK/setup.txt" | tail -1

# Random transfers of 1..100 cents between distinct accounts, each with its own id.
awk -v n="$ACCOUNTS" -v m="$TRANSFERS" 'BEGIN { srand(42); for (i = 1; i <= m; i++) {
  from = 1 + int(rand() * n); to = 1 + int(rand() * (n - 1)); if (to >= from) to++;
  printf "TRANSFER %d %d %d USD demo-%d\r\n", from, to, 1 + int(rand() * 100), i } }' \
  >"$WORK/transfers.txt"
echo "demo: sending $TRANSFERS pipelined transfers between $ACCOUNTS accounts"
START_NS=$(date +%s%N)
PIPE_RESULT="$("${CLI[@]}" --pipe <"$WORK/transfers.txt" | tail -1)"
END_NS=$(date +%s%N)
ELAPSED_MS=$(( (END_NS - START_NS) / 1000000 ))
echo "demo: redis-cli --pipe: $PIPE_RESULT"
echo "demo: $TRANSFERS transfers in ${ELAPSED_MS} ms = $(( TRANSFERS * 1000 / (ELAPSED_MS > 0 ? ELAPSED_MS : 1) )) transfers/s" \
     "(one redis-cli connection, includes redis-cli's own work)"

# A replay with the same transaction id changes nothing; reusing it differently is refused.
echo "demo: replay of demo-1 -> $("${CLI[@]}" TRANSFER $(sed -n '1p' "$WORK/transfers.txt" | tr -d '\r' | cut -d' ' -f2-))"
echo "demo: balances of accounts 1-3 (available held currency):"
for a in 1 2 3; do echo "  account $a: $("${CLI[@]}" BALANCE "$a" | tr '\n' ' ')"; done
echo "demo: audit:"
"${CLI[@]}" AUDIT | paste - - | sed 's/^/  /'
TOTAL=$("${CLI[@]}" AUDIT | paste - - | awk '$1=="available"{a=$2} $1=="held"{h=$2} END{print a+h}')
EXPECTED=$(( ACCOUNTS * 1000000 ))
if [[ "$TOTAL" == "$EXPECTED" ]]; then
  echo "demo: money conserved: sum of balances $TOTAL == deposits $EXPECTED"
else
  echo "demo: MONEY NOT CONSERVED: sum of balances $TOTAL != deposits $EXPECTED"; exit 1
fi
"${CLI[@]}" INFO stats | grep -E 'total_commands_processed|total_error_replies' | tr -d '\r' | sed 's/^/  /'

# Crash and recovery: every acknowledged transfer is in the event log (one fdatasync
# per loop turn before replies leave), so a kill -9 loses nothing.
BEFORE="$("${CLI[@]}" AUDIT | tr '\n' ' ')"
BALANCE_1="$("${CLI[@]}" BALANCE 1 | tr '\n' ' ')"
{ kill -KILL "$SHARD_PID" && wait "$SHARD_PID"; } 2>/dev/null || true
echo "demo: killed the shard with SIGKILL; restarting it on $WORK/data"
rm -f "$WORK/port"
"$SHARD" --port=0 --ready_file="$WORK/port" --data_dir="$WORK/data" >"$WORK/shard2.log" 2>&1 &
SHARD_PID=$!
for _ in $(seq 1 200); do [[ -s "$WORK/port" ]] && break; sleep 0.05; done
[[ -s "$WORK/port" ]] || { echo "demo: shard did not restart:"; cat "$WORK/shard2.log"; exit 1; }
CLI=(redis-cli -p "$(cat "$WORK/port")")
grep -o 'recovered from .*' "$WORK/shard2.log" | sed 's/^/  /'
AFTER="$("${CLI[@]}" AUDIT | tr '\n' ' ')"
if [[ "$AFTER" == "$BEFORE" ]]; then
  echo "demo: after the crash the audit is unchanged: $AFTER"
else
  echo "demo: STATE CHANGED BY THE CRASH: before [$BEFORE] after [$AFTER]"; exit 1
fi
echo "demo: a replay of demo-1 after the restart -> $("${CLI[@]}" TRANSFER $(sed -n '1p' "$WORK/transfers.txt" | tr -d '\r' | cut -d' ' -f2-))"
echo "demo: wallet-history account 1 (last lines; the folder is read, never written):"
"$HISTORY" account --data_dir="$WORK/data" --account=1 | tail -3 | sed 's/^/  /'
echo "demo: BALANCE 1 from the shard: $BALANCE_1"
