#!/usr/bin/env bash
# The product's main job, for now on one shard: build, start wallet-shard on a free
# port, open and fund accounts, drive a pipelined transfer workload through it with
# the Redis tools (redis-cli --pipe), print throughput, balances and the money audit,
# and stop the shard. Later issues widen this to a whole cluster.
#
#   deploy/demo.sh                    # 1,000 accounts, 200,000 transfers
#   ACCOUNTS=10000 TRANSFERS=1000000 deploy/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ACCOUNTS="${ACCOUNTS:-1000}"
TRANSFERS="${TRANSFERS:-200000}"
bash deploy/build.sh >/dev/null
SHARD=build/src/shard/wallet-shard

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
