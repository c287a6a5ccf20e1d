# common.sh — shared by the benchmark scripts (sourced, not run). Expects ROOT,
# BUILD_DIR and SKIP_BUILD to be set by the caller.
#
#   build_benchmark_binaries   builds wallet-shard and wallet-shard-bench (unless
#                              SKIP_BUILD=1) and sets SHARD, DRIVER and REVISION
#   free_port                  prints a TCP port nothing listens on
#   log MESSAGE                progress line on stderr

log() { echo "== $*" >&2; }

build_benchmark_binaries() {
  if [[ "$SKIP_BUILD" != "1" ]]; then
    log "building into $BUILD_DIR"
    if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
      cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DWALLET_BUILD_TESTS=OFF >/dev/null
    fi
    ninja -C "$BUILD_DIR" wallet-shard wallet-shard-bench >/dev/null
  fi
  # What was measured: the last commit that changed src/ (or the top CMakeLists.txt),
  # and whether src/ had uncommitted changes. With SKIP_BUILD=1 this describes the
  # tree, which may be newer than the binaries.
  REVISION="src at $(git -C "$ROOT" log -1 --format=%h -- src CMakeLists.txt 2>/dev/null || echo unknown)"
  if ! git -C "$ROOT" diff --quiet HEAD -- src CMakeLists.txt 2>/dev/null; then
    REVISION="$REVISION + uncommitted changes"
  fi
  if [[ "$SKIP_BUILD" == "1" ]]; then
    REVISION="$REVISION (SKIP_BUILD=1: binaries not rebuilt)"
  fi
  SHARD="$BUILD_DIR/src/shard/wallet-shard"
  DRIVER="$BUILD_DIR/benchmarks/wallet-shard-bench"
}

free_port() {
  local port
  for _ in $(seq 1 100); do
    port=$((20000 + RANDOM % 40000))
    if [[ -z "$(ss -Htln "sport = :$port")" ]]; then echo "$port"; return 0; fi
  done
  return 1
}
