# common.sh — shared by the benchmark scripts (sourced, not run). Expects ROOT,
# BUILD_DIR and SKIP_BUILD to be set by the caller.
#
#   build_benchmark_binaries   builds wallet-shard and wallet-shard-bench (unless
#                              SKIP_BUILD=1) and sets SHARD, DRIVER and REVISION
#   free_port                  prints a TCP port nothing listens on (deploy/lib.sh)
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

# free_port (and the other deploy helpers) live in deploy/lib.sh.
# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../deploy/lib.sh"

# --- more helpers (run_durable_vs_redis.sh, run_recovery.sh, run_shard_vs_redis.sh) ---
#
#   busy_cores                 busy cores of the whole machine over 3 s
#   wait_idle                  waits (at most WAIT_IDLE_MAX_S, default 600) until
#                              busy_cores < WAIT_IDLE_CORES; WAIT_IDLE_CORES=0 (default)
#                              does not wait
#   start_shard LOG READY FLAG...   starts wallet-shard --port=0 --ready_file=READY FLAG...
#                              in the background and waits for READY (at most
#                              START_TIMEOUT_S, default 120 s); sets STARTED_PID and
#                              STARTED_PORT
#   start_server BINARY LOG READY FLAG...  the same for any binary that takes --port=0
#                              and --ready_file (wallet-router)
#   start_redis DIR LOG ARG...  starts redis-server on a free port with --dir DIR and
#                              waits for PING; sets STARTED_PID and STARTED_PORT
#   stop_pid PID [SIGNAL]      sends SIGNAL (default TERM) to a process started here and
#                              reaps it
#   stop_started               stops every process start_shard/start_redis started that
#                              is still running, the last started first (for EXIT traps)
#   cleanup_on_exit PATH...    on exit (also after INT/TERM or a failure): stop_started,
#                              remove PATH..., and print where OUT_DIR (if set) is kept
#   info_field PORT SECTION KEY  one field of INFO SECTION
#   field LINE KEY             the value of KEY=value in a driver RESULT line
#   median / spread VALUE...   median; "min-max"
#   describe_fs DIR            file system type, device and mount point holding DIR
#   data_work_dir NAME         prints a new folder NAME.XXXXXX under DATA_ROOT (default
#                              /tmp) for servers' data; refuses a tmpfs or ramfs (fsync
#                              would cost nothing there) unless ALLOW_TMPFS=1

busy_cores() {
  local b1 b2
  b1="$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9}' /proc/stat)"; sleep 3
  b2="$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9}' /proc/stat)"
  awk -v d=$((b2 - b1)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", d / hz / 3 }'
}

wait_idle() {
  local limit="${WAIT_IDLE_CORES:-0}" max_s="${WAIT_IDLE_MAX_S:-600}" start=$SECONDS busy
  [[ "$limit" == "0" ]] && return 0
  while :; do
    busy="$(busy_cores)"
    awk -v b="$busy" -v l="$limit" 'BEGIN { exit !(b < l) }' && return 0
    if (( SECONDS - start > max_s )); then
      log "machine still busy ($busy cores) after ${max_s} s; measuring anyway"
      return 0
    fi
  done
}

STARTED_PIDS=()

start_shard() { start_server "$SHARD" "$@"; }

start_server() {
  local binary=$1 log_file=$2 ready=$3 deadline
  shift 3
  rm -f "$ready"
  "$binary" --port=0 --ready_file="$ready" "$@" >"$log_file" 2>&1 &
  STARTED_PID=$!
  STARTED_PIDS+=("$STARTED_PID")
  deadline=$((SECONDS + ${START_TIMEOUT_S:-120}))
  until [[ -s "$ready" ]]; do
    if ! kill -0 "$STARTED_PID" 2>/dev/null || (( SECONDS > deadline )); then
      echo "$(basename "$binary") did not start:" >&2; tail -5 "$log_file" >&2; return 1
    fi
    sleep 0.005
  done
  STARTED_PORT="$(cat "$ready")"
}

start_redis() {
  local dir=$1 log_file=$2 attempt
  shift 2
  mkdir -p "$dir"
  # free_port checks listeners only: a port can still be some connection's local
  # port, and then the bind fails; try another one.
  for attempt in 1 2 3; do
    STARTED_PORT="$(free_port)"
    redis-server --port "$STARTED_PORT" --bind 127.0.0.1 --daemonize no --dir "$dir" "$@" \
      >"$log_file" 2>&1 &
    STARTED_PID=$!
    STARTED_PIDS+=("$STARTED_PID")
    for _ in $(seq 1 200); do
      redis-cli -p "$STARTED_PORT" PING >/dev/null 2>&1 && return 0
      kill -0 "$STARTED_PID" 2>/dev/null || break
      sleep 0.05
    done
    stop_pid "$STARTED_PID"
    grep -q 'Address already in use' "$log_file" || break
    log "redis-server: port $STARTED_PORT in use (attempt $attempt), trying another"
  done
  echo "redis-server did not start:" >&2; tail -5 "$log_file" >&2; return 1
}

stop_pid() {
  local pid=$1 signal=${2:-TERM} kept=() p
  kill -"$signal" "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${STARTED_PIDS[@]}"; do [[ "$p" == "$pid" ]] || kept+=("$p"); done
  STARTED_PIDS=("${kept[@]}")
}

stop_started() {
  local i pid
  # The last started first: a router before its shard, a shard before its ZooKeeper.
  for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do
    pid=${STARTED_PIDS[i]}
    if kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  done
  STARTED_PIDS=()
}

CLEANUP_PATHS=()
cleanup_on_exit() {
  CLEANUP_PATHS=("$@")
  trap _cleanup_on_exit EXIT
  trap 'exit 130' INT TERM
}
_cleanup_on_exit() {
  local status=$?
  stop_started
  rm -rf "${CLEANUP_PATHS[@]}"
  [[ -z "${OUT_DIR:-}" ]] || echo "raw output kept in $OUT_DIR" >&2
  exit "$status"
}

info_field() { redis-cli -p "$1" INFO "$2" | tr -d '\r' | sed -n "s/^$3://p"; }
field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p" | head -1; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
spread() { printf '%s\n' "$@" | sort -g | awk 'NR==1{lo=$1} {hi=$1} END {print lo "-" hi}'; }
# (findmnt -T lists every mount stacked on the mount point; the last one is the one in use)
describe_fs() { findmnt -n -o FSTYPE,SOURCE,TARGET -T "$1" | tail -1 | awk '{print $1 " on " $2 " (mounted at " $3 ")"}'; }
data_work_dir() {
  local root="${DATA_ROOT:-/tmp}" fs
  fs="$(stat -f -c %T "$root")"
  if [[ "$fs" == tmpfs || "$fs" == ramfs ]] && [[ "${ALLOW_TMPFS:-0}" != 1 ]]; then
    echo "$root is on $fs: fsync would cost nothing there; set DATA_ROOT to a folder on a disk" \
         "(or ALLOW_TMPFS=1)" >&2
    return 1
  fi
  mktemp -d "$root/$1.XXXXXX"
}

# --- Measuring processes and starting ZooKeeper (the cluster benchmarks). ---------

# CPU seconds (user + system) process $1 has used so far, from /proc/<pid>/stat.
cpu_s() { sed 's/.*) //' "/proc/$1/stat" | awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($12 + $13) / hz }'; }
now_s() { date +%s.%N; }
load1() { cut -d' ' -f1 /proc/loadavg; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
# per_transfer_us <cpu seconds> <transfers> [decimals]: CPU microseconds per transfer.
per_transfer_us() {
  awk -v c="$1" -v n="$2" -v d="${3:-1}" 'BEGIN { if (n > 0) printf "%.*f", d, c * 1e6 / n; else print "n/a" }'
}

# start_zookeeper <dir>: a standalone ZooKeeper on a free port (tried 3 times: the
# port can be taken between free_port and the bind); sets ZK_PID and ZK_PORT.
start_zookeeper() {
  local dir=$1 port attempt
  for attempt in 1 2 3; do
    port="$(free_port)"
    zookeeper_config "$dir" "$port" no  # no forceSync: ZooKeeper is off the data path
    "${ZOOKEEPER_ARGV[@]}" >"$dir/zookeeper.log" 2>&1 &
    ZK_PID=$!
    STARTED_PIDS+=("$ZK_PID")
    for _ in $(seq 1 300); do
      if zk_four_letter "$port" srvr | grep -q '^Mode: standalone'; then ZK_PORT=$port; return 0; fi
      kill -0 "$ZK_PID" 2>/dev/null || break
      sleep 0.1
    done
    stop_pid "$ZK_PID"
    log "ZooKeeper did not start on port $port (attempt $attempt)"
  done
  tail -5 "$dir/zookeeper.log" >&2
  return 1
}
