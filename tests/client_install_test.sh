#!/usr/bin/env bash
# ClientInstall.ExampleAgainstCluster: the client library as an application gets it.
#   1. `cmake --install BUILD_DIR --prefix <tmp>`: the library, its header and the
#      CMake package land under the prefix.
#   2. A one-file project that includes only the installed header (first, with
#      -Wall -Wextra -Werror) and links WalletClient::wallet_client: the header
#      compiles alone and the package brings every library it needs.
#   3. src/client/example/ configured and built as a standalone project with
#      -DCMAKE_PREFIX_PATH=<tmp> (find_package(WalletClient) from the prefix only).
#   4. The built example run against a real local cluster (deploy/cluster.sh in a
#      temporary folder on free ports: ZooKeeper, two shards, two routers): the
#      transfer OK, its repeat OK, the refusal rejected=1, the balances; the cluster
#      is taken down by pid at the end, also on failure, and nothing is left running.
#
#   bash tests/client_install_test.sh BUILD_DIR      # CTest passes its build folder
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="$(cd "${1:?usage: client_install_test.sh BUILD_DIR}" && pwd)"
WORK="$(mktemp -d -t wallet-client-install-test.XXXXXX)"
PREFIX="$WORK/prefix"
# shellcheck source=tests/script_cluster_lib.sh
source "$ROOT/tests/script_cluster_lib.sh"

for binary in src/shard/wallet-shard src/cluster/wallet-cluster src/router/wallet-router; do
  [[ -x "$BUILD_DIR/$binary" ]] || fail "$BUILD_DIR/$binary is not built"
done


# --- 1. install ------------------------------------------------------------------
step "cmake --install $BUILD_DIR --prefix $PREFIX"
cmake --install "$BUILD_DIR" --prefix "$PREFIX" >"$WORK/install.out" 2>&1 || { cat "$WORK/install.out"; fail "install failed"; }
[[ -f "$PREFIX/include/wallet/client/wallet_client.h" ]] || fail "no installed header"
config="$(find "$PREFIX" -name WalletClientConfig.cmake | head -n1)"
[[ -n "$config" ]] || { find "$PREFIX"; fail "no WalletClientConfig.cmake under $PREFIX"; }
[[ -f "$(dirname "$config")/WalletClientConfigVersion.cmake" ]] || fail "no WalletClientConfigVersion.cmake"
[[ -n "$(find "$PREFIX" -name libwallet_client.a)" ]] || fail "no libwallet_client.a under $PREFIX"
echo "installed: $(cd "$PREFIX" && find . -type f | sort | tr '\n' ' ')"

# find_package must find this prefix's package and nothing else.
check_package_dir() {
  local cache=$1/CMakeCache.txt dir
  dir="$(sed -n 's/^WalletClient_DIR:PATH=//p' "$cache")"
  [[ "$dir" == "$PREFIX"/* ]] || fail "find_package(WalletClient) found [$dir], not the package under $PREFIX"
}

# --- 2. the installed header alone --------------------------------------------------
step "a project that includes only the installed header"
mkdir -p "$WORK/header_check"
cat >"$WORK/header_check/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.22)
project(wallet_client_header_check LANGUAGES CXX)
set(CMAKE_CXX_STANDARD 17)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
find_package(WalletClient 0.1 REQUIRED)
add_executable(header_check main.cc)
target_compile_options(header_check PRIVATE -Wall -Wextra -Werror)
target_link_libraries(header_check PRIVATE WalletClient::wallet_client)
EOF
cat >"$WORK/header_check/main.cc" <<'EOF'
#include "client/wallet_client.h"  // first and alone: it must bring what it uses

#include <cstdio>

int main() {
  wallet::client::ClientOptions options;  // no endpoints: Create refuses
  auto client = wallet::client::Client::Create(options);
  std::printf("%s %d\n", wallet::client::NewTxid().c_str(), client.ok() ? 1 : 0);
  return client.ok() ? 1 : 0;
}
EOF
cmake -S "$WORK/header_check" -B "$WORK/header_check/build" -DCMAKE_PREFIX_PATH="$PREFIX" \
  >"$WORK/header_check.out" 2>&1 || { cat "$WORK/header_check.out"; fail "configure of the header check failed"; }
check_package_dir "$WORK/header_check/build"
cmake --build "$WORK/header_check/build" >>"$WORK/header_check.out" 2>&1 ||
  { cat "$WORK/header_check.out"; fail "the installed header does not compile alone (or does not link)"; }
out="$("$WORK/header_check/build/header_check")" || fail "header_check: exit $? ($out)"
[[ "$out" =~ ^[0-9A-HJKMNP-TV-Z]{26}\ 0$ ]] || fail "header_check printed [$out]"

# --- 3. the example as a standalone project ---------------------------------------------
step "src/client/example as a standalone project against $PREFIX"
cmake -S "$ROOT/src/client/example" -B "$WORK/example" -DCMAKE_PREFIX_PATH="$PREFIX" \
  >"$WORK/example.out" 2>&1 || { cat "$WORK/example.out"; fail "configure of the example failed"; }
check_package_dir "$WORK/example"
cmake --build "$WORK/example" >>"$WORK/example.out" 2>&1 || { cat "$WORK/example.out"; fail "the example does not build"; }
EXAMPLE="$WORK/example/transfer_example"
[[ -x "$EXAMPLE" ]] || fail "no $EXAMPLE"
status=0; "$EXAMPLE" >/dev/null 2>&1 || status=$?
(( status == 2 )) || fail "the example without arguments: exit $status, expected 2 (usage)"

# --- 4. the example against a real cluster --------------------------------------------------
step "up: SHARDS=2 ROUTERS=2 in $CLUSTER_DIR"
SHARDS=2 ROUTERS=2 "${CLUSTER[@]}" up >"$WORK/up.out" 2>&1 || { cat "$WORK/up.out"; fail "up failed"; }
port_of() { tr -d '[:space:]' <"$CLUSTER_DIR/$1/port"; }
r0="$(port_of router-0)"
r1="$(port_of router-1)"
# Two accounts on shard-0 (from 1001 up): a same-shard transfer, so the balances the
# example prints right after it are final (a cross-shard credit may land later).
shard0="$(port_of shard-0)"
owned=()
for account in $(seq 1001 2000); do
  [[ "$(redis-cli -p "$shard0" PARTITION "$account" | tr -d '\r' | tail -n1)" != 1 ]] || owned+=("$account")
  (( ${#owned[@]} < 2 )) || break
done
(( ${#owned[@]} == 2 )) || fail "shard-0 owns fewer than two of accounts 1001-2000"
FROM=${owned[0]} TO=${owned[1]}

step "transfer_example 127.0.0.1:$r0,127.0.0.1:$r1 $FROM $TO"
"$EXAMPLE" "127.0.0.1:$r0,127.0.0.1:$r1" "$FROM" "$TO" >"$WORK/run.out" 2>&1 ||
  { cat "$WORK/run.out"; fail "the example exited with $?"; }
cat "$WORK/run.out"
expect_line() {  # expect_line DESCRIPTION EXTENDED_REGEX
  grep -Eq "$2" "$WORK/run.out" || fail "$1: no line matching [$2] in the output above"
}
TXID='[0-9A-HJKMNP-TV-Z]{26}'
expect_line "the deposit" "^deposit 10000 into $FROM: OK \(txid $TXID\)$"
expect_line "the transfer" "^transfer 2500 $FROM -> $TO: OK \(txid $TXID, 1 send\(s\)\)$"
expect_line "the repeat" "^the same transfer again: OK$"
expect_line "the refusal" "^transfer 1000000: INSUFFICIENT_FUNDS: .*\(rejected=1\)$"
# The batch: 3 x 100 moved once the router has TRANSFER.BATCH.
batch_ok="$(grep -Ec '^batch item [0-2]: OK$' "$WORK/run.out" || true)"
if (( batch_ok == 3 )); then
  from_balance=7200 to_balance=2800
elif grep -Eq '^batch item 0: UNKNOWN_COMMAND' "$WORK/run.out"; then
  echo "note: this wallet-router does not know TRANSFER.BATCH yet; the batch moved nothing"
  from_balance=7500 to_balance=2500
else
  fail "the batch: expected 3 OK items (or UNKNOWN_COMMAND from an older router)"
fi
expect_line "the balance of $FROM" "^balance of $FROM: OK available=$from_balance held=0 USD$"
expect_line "the balance of $TO" "^balance of $TO: OK available=$to_balance held=0 USD$"
# The routers agree: the money moved once, whatever the example printed.
for port in "$r0" "$r1"; do
  got="$(redis-cli -p "$port" BALANCE "$FROM" | tr -d '\r' | head -n1)"
  [[ "$got" == "$from_balance" ]] || fail "BALANCE $FROM through port $port: $got, expected $from_balance"
  got="$(redis-cli -p "$port" BALANCE "$TO" | tr -d '\r' | head -n1)"
  [[ "$got" == "$to_balance" ]] || fail "BALANCE $TO through port $port: $got, expected $to_balance"
done

step "down"
"${CLUSTER[@]}" down >/dev/null
[[ -z "$(survivors)" ]] || fail "processes left after down: $(survivors)"
