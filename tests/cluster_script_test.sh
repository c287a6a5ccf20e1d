#!/usr/bin/env bash
# ClusterScript.UpStatusDown: deploy/cluster.sh brings up a real local cluster
# (ZooKeeper, two shards and, once wallet-router is built, a router) in a temporary
# folder on free ports; the test checks `status`, sends OPEN/DEPOSIT/BALANCE to each
# shard with redis-cli (and through the router, with deploy/txops.sh showing a
# transaction), checks that `up` and `down` are idempotent, that data and layout
# survive down/up, and that `down` leaves no process behind.
#
#   bash tests/cluster_script_test.sh BUILD_DIR      # CTest passes its build folder
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="$(cd "${1:?usage: cluster_script_test.sh BUILD_DIR}" && pwd)"
WORK="$(mktemp -d -t wallet-cluster-test.XXXXXX)"
# shellcheck source=tests/script_cluster_lib.sh
source "$ROOT/tests/script_cluster_lib.sh"

for binary in src/shard/wallet-shard src/cluster/wallet-cluster; do
  [[ -x "$BUILD_DIR/$binary" ]] || fail "$BUILD_DIR/$binary is not built"
done
ROUTER_BUILT=0
[[ ! -x "$BUILD_DIR/src/router/wallet-router" ]] || ROUTER_BUILT=1


# expect_output DESCRIPTION EXPECTED COMMAND...: COMMAND's stdout, CRs removed, is EXPECTED.
expect_output() {
  local description=$1 expected=$2 actual
  shift 2
  actual="$("$@" 2>&1 | tr -d '\r')" || true
  [[ "$actual" == "$expected" ]] || fail "$description: expected [$expected], got [$actual]"
}

port_of() { tr -d '[:space:]' <"$CLUSTER_DIR/$1/port"; }
pids() { cat "$CLUSTER_DIR"/*/pid | sort | tr '\n' ' '; }

# down_and_check PIDS: runs `down`, then no pid of PIDS (the pid files' contents
# before) may run, and no process may name the cluster folder.
down_and_check() {
  local pid
  "${CLUSTER[@]}" down
  for pid in $1; do
    # Gone, or a zombie waiting for its parent (init) to reap it.
    [[ ! -e "/proc/$pid" ]] || [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" == Z ]] ||
      fail "pid $pid still runs after down"
  done
  [[ -z "$(survivors)" ]] || fail "processes left after down: $(survivors)"
}

# owned_account PORT: the first account from 1 up whose partition the shard owns.
owned_account() {
  local account reply
  for account in $(seq 1 1000); do
    reply="$(redis-cli -p "$1" PARTITION "$account" | tr -d '\r' | tail -n1)"
    [[ "$reply" != 1 ]] || { echo "$account"; return 0; }
  done
  fail "the shard on port $1 owns none of accounts 1-1000"
}

# --- 1. up with two shards, no router -------------------------------------------
step "up: SHARDS=2 ROUTERS=0 in $CLUSTER_DIR"
SHARDS=2 ROUTERS=0 "${CLUSTER[@]}" up >"$WORK/up.out" || { cat "$WORK/up.out"; fail "up failed"; }
cat "$WORK/up.out"
grep -q "up: cluster local in $CLUSTER_DIR" "$WORK/up.out" || fail "up did not report the cluster"

step "status"
"${CLUSTER[@]}" status >"$WORK/status.out" || { cat "$WORK/status.out"; fail "status exit $? with everything up"; }
for name in zookeeper shard-0 shard-1; do
  grep -Eq "^  $name +[0-9]+ +[0-9]+ +alive " "$WORK/status.out" || { cat "$WORK/status.out"; fail "status: $name not alive"; }
done
grep -q "live shards (2)" "$WORK/status.out" || { cat "$WORK/status.out"; fail "status: not two live shards"; }

step "requests to each shard with redis-cli"
declare -A ACCOUNT
for i in 0 1; do
  port="$(port_of "shard-$i")"
  other="$(port_of "shard-$((1 - i))")"
  account="$(owned_account "$port")"
  ACCOUNT[$i]=$account
  expect_output "OPEN on shard-$i" "OK" redis-cli -p "$port" OPEN "$account" USD
  expect_output "DEPOSIT on shard-$i" "OK" redis-cli -p "$port" DEPOSIT "$account" $((1000 + i)) "dep-$i"
  expect_output "BALANCE on shard-$i" "$((1000 + i))"$'\n'"0"$'\n'"USD" redis-cli -p "$port" BALANCE "$account"
  # The other shard refuses the account and names its owner from the partition map.
  reply="$(redis-cli -p "$other" BALANCE "$account" | tr -d '\r')"
  [[ "$reply" == "MOVED "*" shard-$i "* ]] || fail "shard-$((1 - i)) on account $account: expected MOVED to shard-$i, got [$reply]"
  echo "shard-$i (port $port): account $account opened, 10.0$i USD deposited; shard-$((1 - i)) answers MOVED"
done

step "up again: already running, nothing restarted"
before="$(pids)"
SHARDS=2 ROUTERS=0 "${CLUSTER[@]}" up >"$WORK/up2.out" || { cat "$WORK/up2.out"; fail "second up failed"; }
grep -q "already running" "$WORK/up2.out" || { cat "$WORK/up2.out"; fail "second up did not say 'already running'"; }
[[ "$(pids)" == "$before" ]] || fail "second up changed the pids: $before -> $(pids)"
# Other settings while it runs are refused.
if SHARDS=3 "${CLUSTER[@]}" up >"$WORK/up3.out" 2>&1; then fail "up with SHARDS=3 on a running 2-shard cluster succeeded"; fi
grep -q "other settings" "$WORK/up3.out" || { cat "$WORK/up3.out"; fail "up with other settings: no clear error"; }

step "down: every pid gone, nothing left"
down_and_check "$before"
if "${CLUSTER[@]}" status >"$WORK/status2.out"; then fail "status exit 0 after down"; else status=$?; fi
(( status == 3 )) || { cat "$WORK/status2.out"; fail "status after down: exit $status, expected 3"; }
"${CLUSTER[@]}" down >/dev/null || fail "down on a stopped cluster failed"

# --- 2. up again on the same folder: the layout and the balances are back ----------
if (( ROUTER_BUILT )); then routers=1; else routers=0; fi
step "up again with ROUTERS=$routers: data and layout survive down/up"
ROUTERS=$routers "${CLUSTER[@]}" up >"$WORK/up4.out" || { cat "$WORK/up4.out"; fail "up after down failed"; }
grep -q "nothing to do" "$WORK/up4.out" || { cat "$WORK/up4.out"; fail "bootstrap did not find the existing layout"; }
for i in 0 1; do
  expect_output "BALANCE on shard-$i after down/up" "$((1000 + i))"$'\n'"0"$'\n'"USD" \
    redis-cli -p "$(port_of "shard-$i")" BALANCE "${ACCOUNT[$i]}"
done

if (( ROUTER_BUILT )); then
  step "requests through router-0"
  router="$(port_of router-0)"
  expect_output "PING through the router" "PONG" redis-cli -p "$router" PING
  "${CLUSTER[@]}" status >"$WORK/status3.out" || { cat "$WORK/status3.out"; fail "status with a router"; }
  grep -Eq "^  router-0 +[0-9]+ +$router +alive " "$WORK/status3.out" || { cat "$WORK/status3.out"; fail "status: router-0 not alive"; }
  for i in 0 1; do
    account="${ACCOUNT[$i]}"
    expect_output "DEPOSIT through the router to shard-$i" "OK" redis-cli -p "$router" DEPOSIT "$account" 5 "router-dep-$i"
    expect_output "BALANCE through the router from shard-$i" "$((1005 + i))"$'\n'"0"$'\n'"USD" \
      redis-cli -p "$router" BALANCE "$account"
  done
  # A new account, opened through the router, lands on its owner.
  expect_output "OPEN through the router" "OK" redis-cli -p "$router" OPEN 424242 EUR
  expect_output "BALANCE through the router" "0"$'\n'"0"$'\n'"EUR" redis-cli -p "$router" BALANCE 424242

  step "deploy/txops.sh through router-0 (found from CLUSTER_DIR)"
  TXOPS=(bash "$ROOT/deploy/txops.sh")
  "${TXOPS[@]}" show router-dep-1 >"$WORK/show.out" || { cat "$WORK/show.out"; fail "txops show failed"; }
  if ! grep -Eq '^kind +local$' "$WORK/show.out" || ! grep -Eq '^shard +shard-1$' "$WORK/show.out"; then
    cat "$WORK/show.out"; fail "txops show: not the local deposit on shard-1"
  fi
  status=0; "${TXOPS[@]}" show never-seen >/dev/null 2>&1 || status=$?
  (( status == 3 )) || fail "txops show of an unknown txid: exit $status, expected 3"
  status=0; "${TXOPS[@]}" resolve some-tx sideways >/dev/null 2>&1 || status=$?
  (( status == 2 )) || fail "txops resolve with a bad direction: exit $status, expected 2"
  if [[ "$(redis-cli -p "$router" TX.INDOUBT 2>&1)" != *UNKNOWN_COMMAND* ]]; then
    out="$("${TXOPS[@]}" indoubt 0 --details 2>"$WORK/indoubt.err")" || { cat "$WORK/indoubt.err"; fail "txops indoubt failed"; }
    if [[ -n "$out" ]] || ! grep -q '^txops: 0 transaction(s) in doubt' "$WORK/indoubt.err"; then
      fail "txops indoubt on a quiet cluster: [$out] [$(cat "$WORK/indoubt.err")]"
    fi
  fi
else
  step "wallet-router is not built: the router part is skipped"
fi

step "down: every pid gone, nothing left"
down_and_check "$(pids)"
