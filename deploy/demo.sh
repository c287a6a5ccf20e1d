#!/usr/bin/env bash
# The product's main job: build, bring up a local cluster (deploy/cluster.sh:
# ZooKeeper, SHARDS durable shards, 2 routers, all on loopback), open and fund
# accounts through a router, drive a pipelined transfer workload through the router
# with the Redis tools (redis-cli --pipe), print throughput, balances and the money
# audit of every shard, then kill -9 a shard, bring it back with `cluster.sh up` and
# check that nothing was lost (and that the history tool agrees).
#
# The bulk of the transfers go between accounts of the same shard (one atomic shard
# command each); the demo also runs a cross-shard transfer in each mode (TC/C and
# saga, docs/transactions.md) and waits until no transaction is in doubt.
#
#   deploy/demo.sh                     # 1,000 accounts, 200,000 transfers, 2 shards
#   ACCOUNTS=10000 TRANSFERS=1000000 SHARDS=3 deploy/demo.sh
#   SKIP_BUILD=1 deploy/demo.sh        # use what is already built in $BUILD_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
ACCOUNTS="${ACCOUNTS:-1000}"
TRANSFERS="${TRANSFERS:-200000}"
SHARDS="${SHARDS:-2}"
BUILD_DIR="${BUILD_DIR:-build}"
[[ "${SKIP_BUILD:-0}" == 1 ]] || bash deploy/build.sh >/dev/null
HISTORY="$BUILD_DIR/src/shard/wallet-history"

WORK="$(mktemp -d -t wallet-demo.XXXXXX)"
export CLUSTER_DIR="$WORK/cluster" SHARDS ROUTERS=2 BUILD_DIR
cleanup() {
  bash deploy/cluster.sh down --purge >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "demo: bringing up ZooKeeper, $SHARDS shards and 2 routers in $CLUSTER_DIR"
bash deploy/cluster.sh up >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log"; exit 1; }
port_of() { cat "$CLUSTER_DIR/$1/port"; }
ROUTER=(redis-cli -p "$(port_of router-0)")
ROUTER1=(redis-cli -p "$(port_of router-1)")
echo "demo: routers on 127.0.0.1:$(port_of router-0) and :$(port_of router-1); shards:" \
     "$(for ((i = 0; i < SHARDS; i++)); do printf '%s ' ":$(port_of "shard-$i")"; done)"

# Accounts 1..N in USD, each funded with 1,000,000 minor units ($10,000.00), all
# through router-0 (it sends each to its shard).
awk -v n="$ACCOUNTS" 'BEGIN { for (i = 1; i <= n; i++) {
  printf "OPEN %d USD\r\nDEPOSIT %d 1000000 fund-%d\r\n", i, i, i } }' >"$WORK/setup.txt"
"${ROUTER[@]}" --pipe <"$WORK/setup.txt" | tail -1

# Which shard holds each account (each shard's PARTITION command says whether it
# owns the account's partition), to pick same-shard pairs.
for ((i = 0; i < SHARDS; i++)); do
  seq 1 "$ACCOUNTS" | sed 's/^/PARTITION /' | redis-cli -p "$(port_of "shard-$i")" |
    awk -v shard="$i" 'NR % 2 == 0 && $1 == 1 { print (NR / 2), shard }'
done | sort -n >"$WORK/owners.txt"
[[ "$(wc -l <"$WORK/owners.txt")" == "$ACCOUNTS" ]] || { echo "demo: account owners incomplete"; exit 1; }

# Random same-shard transfers of 1..100 cents, each with its own id.
awk -v m="$TRANSFERS" 'BEGIN { srand(42) }
  { k = ++count[$2]; member[$2, k] = $1 }
  END {
    nshards = 0; for (s in count) if (count[s] >= 2) shards[nshards++] = s
    if (nshards == 0) exit 1
    for (i = 1; i <= m; i++) {
      s = shards[int(rand() * nshards)]; n = count[s]
      a = 1 + int(rand() * n); b = 1 + int(rand() * (n - 1)); if (b >= a) b++
      printf "TRANSFER %d %d %d USD demo-%d\r\n", member[s, a], member[s, b], 1 + int(rand() * 100), i
    }
  }' "$WORK/owners.txt" >"$WORK/transfers.txt"
echo "demo: sending $TRANSFERS pipelined same-shard transfers between $ACCOUNTS accounts through router-0"
START_NS=$(date +%s%N)
PIPE_RESULT="$("${ROUTER[@]}" --pipe <"$WORK/transfers.txt" | tail -1)"
END_NS=$(date +%s%N)
ELAPSED_MS=$(( (END_NS - START_NS) / 1000000 ))
echo "demo: redis-cli --pipe: $PIPE_RESULT"
echo "demo: $TRANSFERS transfers in ${ELAPSED_MS} ms = $(( TRANSFERS * 1000 / (ELAPSED_MS > 0 ? ELAPSED_MS : 1) )) transfers/s" \
     "(one redis-cli connection through one router; includes redis-cli's own work)"

# Idempotency, and cross-shard transfers in both modes, through the other router.
FIRST="$(sed -n '1p' "$WORK/transfers.txt" | tr -d '\r' | cut -d' ' -f2-)"
echo "demo: replay of demo-1 through router-1 -> $("${ROUTER1[@]}" TRANSFER $FIRST)"
A0="$(awk '$2 == 0 { print $1; exit }' "$WORK/owners.txt")"
A1="$(awk '$2 != 0 { print $1; exit }' "$WORK/owners.txt")"
if [[ -n "$A1" ]]; then
  echo "demo: cross-shard TC/C transfer $A0 -> $A1 -> $("${ROUTER1[@]}" TRANSFER "$A0" "$A1" 1 USD demo-tcc MODE tcc)"
  echo "demo: cross-shard saga transfer $A1 -> $A0 -> $("${ROUTER1[@]}" TRANSFER "$A1" "$A0" 2 USD demo-saga MODE saga)"
  # The credit side lands just after the client's +OK: wait until nothing is in doubt.
  for _ in $(seq 1 100); do
    [[ -z "$("${ROUTER1[@]}" TX.INDOUBT)" ]] && break
    sleep 0.05
  done
  echo "demo: TX demo-tcc -> $("${ROUTER1[@]}" TX demo-tcc | paste - - | awk '$1 == "row.phase" { print $2 }')"
fi
echo "demo: balances of accounts 1-3 through router-1 (available held currency):"
for a in 1 2 3; do echo "  account $a: $("${ROUTER1[@]}" BALANCE "$a" | tr '\n' ' ')"; done

# The money audit: every shard's totals, summed.
audit_all() {
  for ((i = 0; i < SHARDS; i++)); do redis-cli -p "$(port_of "shard-$i")" AUDIT | paste - -; done |
    awk '{ sum[$1] += $2 } END { printf "available %s held %s deposited %s withdrawn %s", sum["available"], sum["held"], sum["deposited"], sum["withdrawn"] }'
}
BEFORE="$(audit_all)"
echo "demo: audit over $SHARDS shards: $BEFORE"
TOTAL=$(awk '{ print $2 + $4 }' <<<"$BEFORE")
EXPECTED=$(( ACCOUNTS * 1000000 ))
if [[ "$TOTAL" == "$EXPECTED" ]]; then
  echo "demo: money conserved: sum of balances $TOTAL == deposits $EXPECTED"
else
  echo "demo: MONEY NOT CONSERVED: sum of balances $TOTAL != deposits $EXPECTED"; exit 1
fi

# Crash and recovery: every acknowledged transfer is in its shard's event log (one
# fdatasync per loop turn before replies leave), so a kill -9 loses nothing.
BALANCE_1="$("${ROUTER[@]}" BALANCE 1 | tr '\n' ' ')"
SHARD0_PID="$(cat "$CLUSTER_DIR/shard-0/pid")"
kill -KILL "$SHARD0_PID"
echo "demo: killed shard-0 (pid $SHARD0_PID) with SIGKILL; bringing it back with deploy/cluster.sh up"
for _ in $(seq 1 100); do kill -0 "$SHARD0_PID" 2>/dev/null || break; sleep 0.05; done
bash deploy/cluster.sh up >"$WORK/up2.log" 2>&1 || { cat "$WORK/up2.log"; exit 1; }
grep -o 'recovered from .*' "$CLUSTER_DIR/shard-0/shard-0.log" | tail -1 | sed 's/^/  /'
AFTER="$(audit_all)"
if [[ "$AFTER" == "$BEFORE" ]]; then
  echo "demo: after the crash the audit is unchanged: $AFTER"
else
  echo "demo: STATE CHANGED BY THE CRASH: before [$BEFORE] after [$AFTER]"; exit 1
fi
echo "demo: replay of demo-1 after the restart -> $("${ROUTER[@]}" TRANSFER $FIRST)"
OWNER_1="$(awk '$1 == 1 { print $2 }' "$WORK/owners.txt")"
echo "demo: wallet-history account 1 on shard-$OWNER_1 (last lines; the folder is read, never written):"
"$HISTORY" account --data_dir="$CLUSTER_DIR/shard-$OWNER_1/data" --account=1 | tail -3 | sed 's/^/  /'
echo "demo: BALANCE 1 through router-0: $BALANCE_1"
