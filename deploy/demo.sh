#!/usr/bin/env bash
# The product's main job, on a fresh machine: install what is missing and build
# (deploy/build.sh), bring up a local cluster (deploy/cluster.sh: ZooKeeper, SHARDS
# durable shards with one fdatasync per loop turn, 2 routers, all on loopback), open
# and fund ACCOUNTS accounts, run the load generator (wallet-loadgen, on the client
# library) for DURATION_S seconds with a realistic mix — Zipf-skewed accounts, most
# transfers within a shard, CROSS_SHARE of them across shards (TC/C and saga), through
# both routers — print its figures and the money audit, then kill -9 a shard, bring it
# back and check that the audit has not moved, and take the cluster down.
#
#   deploy/demo.sh                          # 4 shards, 100 000 accounts, 20 s
#   DURATION_S=60 ACCOUNTS=1000000 deploy/demo.sh
#   BATCH=64 deploy/demo.sh                 # the same mix sent as TRANSFER.BATCH calls
#   SKIP_BUILD=1 deploy/demo.sh             # use what is already built in $BUILD_DIR
#
# Exits non-zero if the load generator reports money not conserved, or the audit
# changes across the shard's crash and restart.
set -euo pipefail
cd "$(dirname "$0")/.."
ACCOUNTS="${ACCOUNTS:-100000}"
DURATION_S="${DURATION_S:-20}"
SHARDS="${SHARDS:-4}"
CROSS_SHARE="${CROSS_SHARE:-0.1}"
TCC_SHARE="${TCC_SHARE:-0.7}"
BATCH="${BATCH:-1}"
INITIAL_BALANCE=1000000  # $10,000.00 per account
BUILD_DIR="${BUILD_DIR:-build}"
[[ "${SKIP_BUILD:-0}" == 1 ]] || bash deploy/build.sh >/dev/null
LOADGEN="$BUILD_DIR/benchmarks/wallet-loadgen"
[[ -x "$LOADGEN" ]] || { echo "demo: $LOADGEN is not built"; exit 1; }

WORK="$(mktemp -d -t wallet-demo.XXXXXX)"
export CLUSTER_DIR="$WORK/cluster" CLUSTER_NAME=demo SHARDS ROUTERS=2 BUILD_DIR
cleanup() {
  bash deploy/cluster.sh down --purge >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "demo: bringing up ZooKeeper, $SHARDS durable shards and 2 routers in $CLUSTER_DIR"
bash deploy/cluster.sh up >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log"; exit 1; }
port_of() { cat "$CLUSTER_DIR/$1/port"; }
# shellcheck disable=SC1091
ZK="127.0.0.1:$(source "$CLUSTER_DIR/cluster.env" && echo "$REC_ZK_PORT")"
echo "demo: ZooKeeper $ZK; routers :$(port_of router-0) :$(port_of router-1); shards" \
     "$(for ((i = 0; i < SHARDS; i++)); do printf ':%s ' "$(port_of "shard-$i")"; done)"
# The load generator finds the routers and the partition map in ZooKeeper.
LG=("$LOADGEN" --zk="$ZK" --cluster=demo --accounts="$ACCOUNTS" --initial_balance="$INITIAL_BALANCE")

echo "demo: opening and funding $ACCOUNTS accounts (USD, $INITIAL_BALANCE minor units each)"
"${LG[@]}" --setup --duration_s=0 --progress=false 2>&1 | grep -E '^setup|error' | sed 's/^/  /' || true

echo "demo: ${DURATION_S}s of transfers: Zipf-skewed accounts, $CROSS_SHARE of them cross-shard" \
     "($TCC_SHARE TC/C, the rest saga), batch $BATCH, through both routers"
"${LG[@]}" --duration_s="$DURATION_S" --warmup_s=1 --threads=2 --connections=2 --pipeline=32 \
  --skew=zipf --zipf_theta=0.8 --cross_shard_share="$CROSS_SHARE" --tcc_share="$TCC_SHARE" --batch="$BATCH" \
  --amount=1-500 --audit --json_out="$WORK/run.json" 2>&1 | sed 's/^/  /'
python3 - "$WORK/run.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
l = r["latency_us"]
print(f"demo: {r['transfers_ok']:,} transfers OK in {r['duration_s']:.1f} s = {r['throughput_per_s']:,.0f}/s; "
      f"latency p50 {l['p50']/1000:.2f} ms, p99 {l['p99']/1000:.2f} ms, max {l['max']/1000:.1f} ms")
errors = ", ".join(f"{k} {v}" for k, v in sorted(r["errors"].items())) or "none"
print(f"demo: refusals and errors: {errors}")
a = r.get("audit")
if not a or not a.get("passed"):
    print(f"demo: MONEY NOT CONSERVED (audit: {a})"); sys.exit(3)
print(f"demo: audit: money conserved: {a['accounts_read']:,} balances sum to {a['sum_available'] + a['sum_held']:,} "
      f"= {a['expected']:,} deposited; held {a['sum_held']}, in doubt {a['in_doubt_left']}")
EOF

# The money audit of every shard, summed: the shards' own books.
audit_all() {
  for ((i = 0; i < SHARDS; i++)); do redis-cli -p "$(port_of "shard-$i")" AUDIT | paste - -; done |
    python3 -c '
import sys, collections
total = collections.Counter()
for line in sys.stdin:
    field, value = line.split()
    total[field] += int(value)
print(" ".join(f"{k} {total[k]}" for k in ("available", "held", "pending_credit", "deposited", "withdrawn")))'
}
BEFORE="$(audit_all)"
echo "demo: the shards' books: $BEFORE"

# Crash and recovery: every acknowledged transfer is in its shard's event log (one
# fdatasync per loop turn before replies leave), so a kill -9 loses nothing.
SHARD0_PID="$(cat "$CLUSTER_DIR/shard-0/pid")"
kill -KILL "$SHARD0_PID"
echo "demo: killed shard-0 (pid $SHARD0_PID) with SIGKILL; bringing it back with deploy/cluster.sh up"
for _ in $(seq 1 100); do kill -0 "$SHARD0_PID" 2>/dev/null || break; sleep 0.05; done
bash deploy/cluster.sh up >"$WORK/up2.log" 2>&1 || { cat "$WORK/up2.log"; exit 1; }
grep -o 'recovered from .*' "$CLUSTER_DIR/shard-0/shard-0.log" | tail -1 | sed 's/^/  /'
AFTER="$(audit_all)"
if [[ "$AFTER" == "$BEFORE" ]]; then
  echo "demo: after the crash the books are unchanged: $AFTER"
else
  echo "demo: STATE CHANGED BY THE CRASH: before [$BEFORE] after [$AFTER]"; exit 1
fi
echo "demo: taking the cluster down"
