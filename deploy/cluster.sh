#!/usr/bin/env bash
# cluster.sh — a whole wallet cluster on this machine, on loopback: a ZooKeeper
# server (Debian's package, java started directly), the cluster's layout
# (`wallet-cluster bootstrap`), N shards and M routers, each with its folder and log
# under one cluster folder. For development, tests and demos; deploy/README.md says
# how hosts (systemd) and containers (compose) are run instead.
#
#   deploy/cluster.sh up        # start what is not running, wait until all are healthy
#   deploy/cluster.sh status    # each process: pid, port, alive/dead; the ZooKeeper layout
#   deploy/cluster.sh logs [-f] [NAME...]  # the last LOG_LINES (20) lines of each log, or follow
#   deploy/cluster.sh down [--purge]     # stop by pid: routers, shards, then ZooKeeper
#
#   SHARDS=4 ROUTERS=2 PARTITIONS=1024 BASE_PORT=7000 deploy/cluster.sh up
#
# Settings (environment; `up` records them in CLUSTER_DIR/cluster.env, and later
# commands on that folder use the recorded ones unless told otherwise):
#   CLUSTER_DIR    the cluster folder (default ${WALLET_CLUSTER_DIR:-/tmp/wallet-cluster})
#   CLUSTER_NAME   the cluster's name in ZooKeeper, /wallet/<name> (default local)
#   SHARDS         shards shard-0 ... shard-<N-1> (default 2)
#   PARTITIONS     partition count, fixed for the cluster's life (default 1024)
#   ROUTERS        routers router-0 ... (default 2 when wallet-router is built, else 0)
#   BASE_PORT      0 (default): free ports (shards and routers bind port 0 and report
#                  it); else fixed: ZooKeeper BASE_PORT, shard i BASE_PORT+100+i,
#                  router j BASE_PORT+200+j, its HTTP port BASE_PORT+300+j
#   FSYNC          the shards' --fsync: always (default), everysec or no
#   PASSWORD_FILE  a file whose first line is the password clients (and routers, to
#                  the shards) must AUTH with; none by default
#   ZK             use this ZooKeeper (host:port[,...]) instead of starting one
#   BUILD_DIR      where the binaries are (default build; built if missing)
#   UP_TIMEOUT_S   how long `up` waits for everything to be healthy (default 60)
#   STOP_GRACE_S   how long `down` waits after SIGTERM before SIGKILL (default 10)
#   KEEP_ON_FAILURE=1  leave what a failed `up` started running, for inspection
#
# Folder layout: CLUSTER_DIR/cluster.env (settings), CLUSTER_DIR/<name>/ for each of
# zookeeper, shard-<i>, router-<j>: pid, port (the bound port), <name>.log, and the
# data (zookeeper/data, shard-<i>/data). `down` keeps the data: the next `up` brings
# the same cluster back; `down --purge` deletes the folder.
#
# Exit status: 0 done; 1 failed (the reason on stderr); 2 bad usage. `status`: 0 all
# running, 1 something is dead or stopped, 3 the cluster is not running at all.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=deploy/lib.sh
source "$ROOT/deploy/lib.sh"

say() { echo "cluster: $*"; }
die() { echo "cluster: error: $*" >&2; exit 1; }
usage_error() { echo "cluster: $* (see: deploy/cluster.sh help)" >&2; exit 2; }

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

# --- settings -----------------------------------------------------------------

CLUSTER_DIR="${CLUSTER_DIR:-${WALLET_CLUSTER_DIR:-/tmp/wallet-cluster}}"
[[ "$CLUSTER_DIR" == /* ]] || CLUSTER_DIR="$PWD/$CLUSTER_DIR"
CLUSTER_DIR="${CLUSTER_DIR%/}"
STATE_FILE="$CLUSTER_DIR/cluster.env"

# The settings that define a cluster's processes, in the order cluster.env keeps them.
SETTINGS=(NAME SHARDS PARTITIONS ROUTERS BASE_PORT FSYNC PASSWORD_FILE ZK_EXTERNAL BUILD_DIR)

# resolve_settings [recorded]: reads what `up` recorded in cluster.env (REC_*), then
# sets each setting from the environment, else the recorded value, else the default.
# With "recorded" (down, status, logs) the recorded values win over the environment:
# those commands act on the cluster as it was started.
resolve_settings() {
  local v REC_NAME="" REC_SHARDS="" REC_PARTITIONS="" REC_ROUTERS="" REC_BASE_PORT="" REC_FSYNC=""
  local REC_PASSWORD_FILE="" REC_ZK_EXTERNAL="" REC_BUILD_DIR=""
  REC_ZK_PORT=""
  if [[ -f "$STATE_FILE" ]]; then
    # shellcheck source=/dev/null
    source "$STATE_FILE"
    if [[ "${1:-}" == recorded ]]; then
      for v in "${SETTINGS[@]}"; do unset "$v"; done
      unset CLUSTER_NAME ZK
    fi
  fi
  RECORDED=""
  for v in "${SETTINGS[@]}"; do v="REC_$v"; RECORDED+="${v#REC_}=${!v} "; done
  NAME="${CLUSTER_NAME:-${REC_NAME:-local}}"
  SHARDS="${SHARDS:-${REC_SHARDS:-2}}"
  PARTITIONS="${PARTITIONS:-${REC_PARTITIONS:-1024}}"
  BASE_PORT="${BASE_PORT:-${REC_BASE_PORT:-0}}"
  FSYNC="${FSYNC:-${REC_FSYNC:-always}}"
  PASSWORD_FILE="${PASSWORD_FILE-${REC_PASSWORD_FILE}}"
  ZK_EXTERNAL="${ZK-${REC_ZK_EXTERNAL}}"
  BUILD_DIR="${BUILD_DIR:-${REC_BUILD_DIR:-$ROOT/build}}"
  [[ "$BUILD_DIR" == /* ]] || BUILD_DIR="$ROOT/$BUILD_DIR"
  if [[ -n "$PASSWORD_FILE" && "$PASSWORD_FILE" != /* ]]; then PASSWORD_FILE="$PWD/$PASSWORD_FILE"; fi
  SHARD_BIN="$BUILD_DIR/src/shard/wallet-shard"
  CLUSTER_BIN="$BUILD_DIR/src/cluster/wallet-cluster"
  ROUTER_BIN="$BUILD_DIR/src/router/wallet-router"
  if [[ -z "${ROUTERS:-}" ]]; then
    if [[ -n "$REC_ROUTERS" ]]; then ROUTERS="$REC_ROUTERS"
    elif [[ -x "$ROUTER_BIN" ]]; then ROUTERS=2
    else ROUTERS=0; fi
  fi
  [[ "$NAME" =~ ^[A-Za-z0-9_-]{1,64}$ ]] || usage_error "CLUSTER_NAME must be 1-64 of [A-Za-z0-9_-]"
  in_range SHARDS 1 100
  in_range ROUTERS 0 100
  in_range PARTITIONS "$SHARDS" 1048576
  [[ "$BASE_PORT" == 0 ]] || in_range BASE_PORT 1024 65135 "(or 0: free ports)"
  [[ "$FSYNC" =~ ^(always|everysec|no)$ ]] || usage_error "FSYNC must be always, everysec or no"
  if [[ -n "$PASSWORD_FILE" ]]; then
    [[ -r "$PASSWORD_FILE" && -n "$(head -n1 "$PASSWORD_FILE" | tr -d '\r')" ]] ||
      usage_error "PASSWORD_FILE=$PASSWORD_FILE is not a readable file with a password on its first line"
    export REDISCLI_AUTH; REDISCLI_AUTH="$(head -n1 "$PASSWORD_FILE" | tr -d '\r')"
  fi
}

# in_range VARIABLE MIN MAX [NOTE]: the variable holds a decimal number in [MIN, MAX].
in_range() {
  local value=${!1}
  if [[ ! "$value" =~ ^[0-9]{1,9}$ ]] || (( 10#$value < $2 || 10#$value > $3 )); then
    usage_error "$1 must be a number from $2 to $3${4:+ $4}, not '$value'"
  fi
}

# The settings as resolved, in the form RECORDED has.
current_settings() { local v; for v in "${SETTINGS[@]}"; do printf '%s=%s ' "$v" "${!v}"; done; }

record_settings() {
  local v
  {
    echo "# Written by deploy/cluster.sh up; read by its other commands."
    for v in "${SETTINGS[@]}"; do printf 'REC_%s=%q\n' "$v" "${!v}"; done
    printf 'REC_ZK_PORT=%q\n' "$ZK_PORT"
  } >"$STATE_FILE.tmp"
  mv "$STATE_FILE.tmp" "$STATE_FILE"
}

# The cluster's processes in start order.
process_names() {
  local i
  [[ -n "$ZK_EXTERNAL" ]] || echo zookeeper
  for ((i = 0; i < SHARDS; i++)); do echo "shard-$i"; done
  for ((i = 0; i < ROUTERS; i++)); do echo "router-$i"; done
}

# --- processes ----------------------------------------------------------------

# A process is running when its pid file names a live process whose command line
# holds its own folder (every process gets a path in it): a stale pid file whose
# number was reused by another process never counts, and is never signalled.
pid_of() { cat "$CLUSTER_DIR/$1/pid" 2>/dev/null || true; }
is_running() { pid_has_arg "$(pid_of "$1")" "$CLUSTER_DIR/$1/"; }
port_of() { head -n1 "$CLUSTER_DIR/$1/port" 2>/dev/null | tr -d '[:space:]' || true; }

# launch NAME COMMAND...: starts COMMAND in its own session (a Ctrl-C or hangup of the
# terminal that ran `up` does not reach it), output appended to NAME/NAME.log, and
# writes its pid. The lock's descriptor is not inherited.
STARTED=()
launch() {
  local name=$1 dir="$CLUSTER_DIR/$1"
  shift
  mkdir -p "$dir"
  rm -f "$dir/port" "$dir/pid"
  echo "=== $(date -Is) deploy/cluster.sh up: $*" >>"$dir/$name.log"
  setsid "$@" </dev/null >>"$dir/$name.log" 2>&1 9>&- &
  echo $! >"$dir/pid"
  [[ " ${STARTED[*]} " == *" $name "* ]] || STARTED+=("$name")
}

log_tail() { tail -n "${2:-15}" "$CLUSTER_DIR/$1/$1.log" 2>/dev/null | sed 's/^/    /' >&2 || true; }

# stop NAME...: SIGTERM to each running one, SIGKILL to those still running after
# STOP_GRACE_S; removes their pid and port files.
stop() {
  local name pid grace="${STOP_GRACE_S:-10}" deadline signalled=() left
  for name in "$@"; do
    if is_running "$name"; then
      pid="$(pid_of "$name")"
      say "stopping $name (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      signalled+=("$name")
    elif [[ -f "$CLUSTER_DIR/$name/pid" ]]; then
      say "$name was not running (stale pid file $(pid_of "$name") removed)"
    fi
  done
  deadline=$((SECONDS + grace))
  while :; do
    left=()
    for name in "${signalled[@]}"; do is_running "$name" && left+=("$name"); done
    (( ${#left[@]} == 0 )) && break
    if (( SECONDS >= deadline )); then
      for name in "${left[@]}"; do
        say "$name did not stop within ${grace} s: SIGKILL to pid $(pid_of "$name")"
        kill -KILL "$(pid_of "$name")" 2>/dev/null || true
      done
      deadline=$((SECONDS + 5))
      grace=5
    fi
    sleep 0.05
  done
  for name in "$@"; do
    [[ -z "${STARTED_HERE_WAIT:-}" ]] || wait "$(pid_of "$name")" 2>/dev/null || true
    rm -f "$CLUSTER_DIR/$name/pid" "$CLUSTER_DIR/$name/port"
  done
}

# stop_in_order NAME...: routers first (no new client requests reach the shards),
# then shards (each closes its event log and deletes its ZooKeeper node), then
# ZooKeeper; each group in parallel. Stopping ZooKeeper with the others would leave
# their sessions, and so their nodes, alive in ZooKeeper's data until they expire.
stop_in_order() {
  local kind name group
  for kind in router- shard- zookeeper; do
    group=()
    for name in "$@"; do [[ "$name" != "$kind"* ]] || group+=("$name"); done
    (( ${#group[@]} == 0 )) || stop "${group[@]}"
  done
}

# --- health -------------------------------------------------------------------

zk_connect() { if [[ -n "$ZK_EXTERNAL" ]]; then echo "$ZK_EXTERNAL"; else echo "127.0.0.1:$ZK_PORT"; fi; }
zk_serving() { zk_four_letter "$ZK_PORT" srvr | grep -q '^Mode: standalone'; }
# wallet-cluster COMMAND on this cluster, its errors on stdout too, without its info
# lines about the ZooKeeper session; the exit status is the tool's.
cluster_tool() {
  "$CLUSTER_BIN" "$1" --zk="$(zk_connect)" --cluster="$NAME" --timeout_ms=5000 "${@:2}" 2>&1 |
    { grep -Ev '^[0-9TZ:.-]+ wallet-cluster\[[0-9]+\] I ' || true; }
}
# "id address" for each live shard (or router) in `wallet-cluster show`.
live_members() { awk -v section="live $1" 'index($0, section) == 1 { f = 1; next } /^[^ ]/ { f = 0 } f { print $1, $2 }'; }
answers_ping() { [[ "$(redis-cli -h 127.0.0.1 -p "$1" PING 2>/dev/null)" == PONG ]]; }

# wait_healthy NAME...: until each is healthy, UP_TIMEOUT_S at most; a process that
# dies meanwhile fails at once. Shards: ready file, PING, registered in ZooKeeper at
# their port. Routers: ready file and PING.
wait_healthy() {
  local deadline=$((SECONDS + ${UP_TIMEOUT_S:-60})) pending=("$@") left name port live shown retried=""
  while (( ${#pending[@]} > 0 )); do
    left=()
    shown=0
    for name in "${pending[@]}"; do
      if ! is_running "$name"; then
        # A shard or router killed without a clean stop (or stopped together with
        # ZooKeeper) leaves its node behind until its session expires (10 s); the
        # new process refuses to start meanwhile. None of ours runs: start it again.
        if [[ "$name" != zookeeper ]] && (( SECONDS < deadline )) &&
           tail -n 3 "$CLUSTER_DIR/$name/$name.log" | grep -q 'is held by another session'; then
          [[ " $retried " == *" $name "* ]] ||
            say "$name: ZooKeeper still holds the node of a previous $name until its session expires (up to 10 s); retrying"
          retried+=" $name"
          sleep 1
          "start_${name%%-*}" "$name"
          left+=("$name")
          continue
        fi
        echo "cluster: error: $name (pid $(pid_of "$name")) ended while starting; its log:" >&2
        log_tail "$name"
        return 1
      fi
      port="$(port_of "$name")"
      case "$name" in
        zookeeper) zk_serving || { left+=("$name"); continue; } ;;
        shard-*)
          if [[ -z "$port" ]] || ! answers_ping "$port"; then left+=("$name"); continue; fi
          if (( !shown )); then live="$(cluster_tool show 2>/dev/null | live_members shards)" || true; shown=1; fi
          grep -qx "$name 127.0.0.1:$port" <<<"$live" || { left+=("$name"); continue; } ;;
        router-*)
          if [[ -z "$port" ]] || ! answers_ping "$port"; then left+=("$name"); continue; fi ;;
      esac
    done
    pending=("${left[@]}")
    (( ${#pending[@]} == 0 )) && break
    if (( SECONDS >= deadline )); then
      echo "cluster: error: not healthy within ${UP_TIMEOUT_S:-60} s: ${pending[*]}; the first one's log:" >&2
      log_tail "${pending[0]}"
      return 1
    fi
    sleep 0.1
  done
}

# --- up -------------------------------------------------------------------------

need_tools() {
  local missing=()
  command -v redis-cli >/dev/null || missing+=(redis-cli)
  command -v ss >/dev/null || missing+=("ss (iproute2)")
  if [[ -z "$ZK_EXTERNAL" ]]; then
    command -v java >/dev/null || missing+=(java)
    [[ -r "$ZK_JAR" ]] || missing+=("$ZK_JAR")
  fi
  (( ${#missing[@]} == 0 )) || die "missing ${missing[*]}: run deploy/setup.sh first"
  if [[ ! -x "$SHARD_BIN" || ! -x "$CLUSTER_BIN" ]]; then
    say "building into $BUILD_DIR (deploy/build.sh)"
    BUILD_DIR="$BUILD_DIR" bash "$ROOT/deploy/build.sh" >/dev/null ||
      die "the build failed: run BUILD_DIR=$BUILD_DIR deploy/build.sh to see why"
  fi
  if (( ROUTERS > 0 )) && [[ ! -x "$ROUTER_BIN" ]]; then
    die "ROUTERS=$ROUTERS but $ROUTER_BIN is not built (ROUTERS=0 runs the cluster without routers)"
  fi
}

port_free() { [[ -z "$(ss -Htln "sport = :$1")" ]]; }

# ZooKeeper's client port: BASE_PORT, or the recorded one (shards that still run
# know it), or a new free one.
choose_zk_port() {
  ZK_PORT=0
  [[ -z "$ZK_EXTERNAL" ]] || return 0
  if (( BASE_PORT > 0 )); then ZK_PORT=$BASE_PORT; return 0; fi
  if [[ -n "$REC_ZK_PORT" && "$REC_ZK_PORT" != 0 ]]; then
    if is_running zookeeper || port_free "$REC_ZK_PORT"; then ZK_PORT=$REC_ZK_PORT; return 0; fi
    local name
    for name in $(process_names); do
      is_running "$name" && die "ZooKeeper's port $REC_ZK_PORT is taken by another process while $name still uses it: run down, then up"
    done
  fi
  ZK_PORT="$(free_port)" || die "no free port for ZooKeeper"
}

start_zookeeper() {
  local sync=yes
  port_free "$ZK_PORT" || die "port $ZK_PORT (for ZooKeeper) is in use by another process"
  [[ "$FSYNC" != no ]] || sync=no
  zookeeper_config "$CLUSTER_DIR/zookeeper" "$ZK_PORT" "$sync"
  launch zookeeper "${ZOOKEEPER_ARGV[@]}"
}

password_flags() {
  [[ -z "$PASSWORD_FILE" ]] || printf '%s\n' "--password_file=$PASSWORD_FILE" "$@"
}

# fixed_ports NAME: the ports NAME binds with a BASE_PORT (none with free ports).
fixed_ports() {
  (( BASE_PORT > 0 )) || return 0
  case "$1" in
    zookeeper) echo "$BASE_PORT" ;;
    shard-*) echo $((BASE_PORT + 100 + ${1#shard-})) ;;
    router-*) echo $((BASE_PORT + 200 + ${1#router-})) $((BASE_PORT + 300 + ${1#router-})) ;;
  esac
}

# Before anything starts: the fixed ports of what is to start must be free.
check_fixed_ports() {
  local name port
  for name in "$@"; do
    for port in $(fixed_ports "$name"); do
      port_free "$port" || die "port $port (for $name, BASE_PORT=$BASE_PORT) is in use by another process"
    done
  done
}

start_shard() {
  local name=$1 port flags
  port="$(fixed_ports "$name")"
  port="${port:-0}"
  mapfile -t flags < <(password_flags)
  launch "$name" "$SHARD_BIN" --bind=127.0.0.1 --port="$port" --ready_file="$CLUSTER_DIR/$name/port" \
    --data_dir="$CLUSTER_DIR/$name/data" --fsync="$FSYNC" \
    --zk="$(zk_connect)" --cluster="$NAME" --shard_id="$name" "${flags[@]}"
}

start_router() {
  local name=$1 port=0 http_port="" flags
  if (( BASE_PORT > 0 )); then read -r port http_port < <(fixed_ports "$name"); fi
  mapfile -t flags < <(password_flags "--shard_password_file=$PASSWORD_FILE")
  mkdir -p "$CLUSTER_DIR/$name"
  rm -f "$CLUSTER_DIR/$name/http_port"
  # HTTP on its own port, when this build of the router has it.
  if "$ROUTER_BIN" --help 2>&1 | grep -q -- '--http_port'; then
    [[ -n "$http_port" ]] || http_port="$(free_port)" || die "no free port for $name's HTTP"
    flags+=("--http_port=$http_port")
    echo "$http_port" >"$CLUSTER_DIR/$name/http_port"
  fi
  launch "$name" "$ROUTER_BIN" --bind=127.0.0.1 --port="$port" --ready_file="$CLUSTER_DIR/$name/port" \
    --zk="$(zk_connect)" --cluster="$NAME" --router_id="$name" "${flags[@]}"
}

# Start only what is not running, in order, each group healthy before the next.
start_group() {
  local kind=$1 name started=()
  shift
  for name in "$@"; do
    if is_running "$name"; then continue; fi
    "start_$kind" "$name"
    started+=("$name")
  done
  (( ${#started[@]} == 0 )) || wait_healthy "${started[@]}"
}

# On a failed or interrupted `up`: stop what this run started (KEEP_ON_FAILURE=1 keeps it).
up_exit() {
  local status=$?
  (( status != 0 )) || return 0
  if (( ${#STARTED[@]} > 0 )); then
    if [[ "${KEEP_ON_FAILURE:-0}" == 1 ]]; then
      echo "cluster: up failed; KEEP_ON_FAILURE=1 leaves running: ${STARTED[*]} (deploy/cluster.sh down stops them)" >&2
      return 0
    fi
    echo "cluster: up failed; stopping what it started: ${STARTED[*]}" >&2
    STARTED_HERE_WAIT=1 stop_in_order "${STARTED[@]}" >&2
  fi
  # Nothing of this run is left: the settings of the last good `up` stay the folder's.
  [[ -z "$PREVIOUS_STATE" ]] || printf '%s\n' "$PREVIOUS_STATE" >"$STATE_FILE"
}

do_up() {
  local name running=() all=() shards=() routers=() output
  resolve_settings  # bad settings are refused before the folder is made
  mkdir -p "$CLUSTER_DIR"
  take_lock
  resolve_settings  # again, under the lock
  mapfile -t all < <(process_names)
  for name in "${all[@]}"; do is_running "$name" && running+=("$name"); done
  if (( ${#running[@]} > 0 )) && [[ "$(current_settings)" != "$RECORDED" ]]; then
    die "the cluster in $CLUSTER_DIR is running (${running[*]}) with other settings: ${RECORDED}(asked: $(current_settings)); run down first, or up with its settings"
  fi
  if (( ${#running[@]} == ${#all[@]} )); then
    say "already running in $CLUSTER_DIR"
    ZK_PORT="${REC_ZK_PORT:-0}"
    print_status
    return 0
  fi
  need_tools
  local to_start=()
  for name in "${all[@]}"; do is_running "$name" || to_start+=("$name"); done
  check_fixed_ports "${to_start[@]}"
  choose_zk_port
  PREVIOUS_STATE="$(cat "$STATE_FILE" 2>/dev/null || true)"
  record_settings
  trap up_exit EXIT
  trap 'exit 130' INT TERM
  (( ${#running[@]} == 0 )) || say "already running: ${running[*]}; starting the rest"
  if [[ -z "$ZK_EXTERNAL" ]]; then start_group zookeeper zookeeper; fi
  if ! output="$(cluster_tool bootstrap --shards="$SHARDS" --partitions="$PARTITIONS" 2>&1)"; then
    printf '%s\n' "$output" >&2
    die "wallet-cluster bootstrap failed (above). If it refused other SHARDS or PARTITIONS: this folder's ZooKeeper keeps the layout it was given first; use those, or 'down --purge' for a new cluster"
  fi
  say "$output"
  for name in "${all[@]}"; do
    case "$name" in shard-*) shards+=("$name") ;; router-*) routers+=("$name") ;; esac
  done
  start_group shard "${shards[@]}"
  (( ${#routers[@]} == 0 )) || start_group router "${routers[@]}"
  trap - EXIT INT TERM
  say "up: cluster $NAME in $CLUSTER_DIR"
  print_status
}

# --- down, status, logs -------------------------------------------------------------

# The cluster folder and its settings must be this user's: the script sources
# cluster.env and signals the pids it finds there (the default folder is in /tmp).
check_owner() {
  local path
  for path in "$CLUSTER_DIR" "$STATE_FILE"; do
    [[ ! -e "$path" || -O "$path" ]] || die "$path belongs to another user: choose another CLUSTER_DIR"
  done
}

take_lock() {
  check_owner
  exec 9>"$CLUSTER_DIR/.lock"
  flock -w 120 9 || die "another deploy/cluster.sh is still working on $CLUSTER_DIR"
}

# with_pid_file PREFIX: the processes whose names start with PREFIX and that have a
# pid file, whatever the settings say: `down` stops everything any `up` on this
# folder started.
with_pid_file() {
  local file
  for file in "$CLUSTER_DIR"/"$1"*/pid; do
    [[ -f "$file" ]] && basename "$(dirname "$file")"
  done
  return 0
}

do_down() {
  local purge=0 names=()
  [[ "${1:-}" != --purge ]] || purge=1
  (( $# == purge )) || usage_error "down takes only --purge"
  if [[ ! -f "$STATE_FILE" ]]; then
    say "no cluster in $CLUSTER_DIR: nothing to stop"
    return 0
  fi
  take_lock
  resolve_settings recorded
  mapfile -t names < <(with_pid_file router-; with_pid_file shard-; with_pid_file zookeeper)
  stop_in_order "${names[@]}"
  if (( purge )); then
    rm -rf -- "$CLUSTER_DIR"
    say "down: stopped and deleted $CLUSTER_DIR"
  else
    say "down: cluster $NAME in $CLUSTER_DIR stopped (data kept; 'down --purge' deletes it)"
  fi
}

print_status() {
  local name pid port state alive=0 stopped=0 extra
  echo "cluster $NAME in $CLUSTER_DIR: $SHARDS shards, $PARTITIONS partitions, $ROUTERS routers, fsync=$FSYNC, ZooKeeper $(zk_connect)"
  printf '  %-10s %-8s %-7s %-7s %s\n' NAME PID PORT STATE LOG
  for name in $(process_names); do
    pid="$(pid_of "$name")"
    port="$(port_of "$name")"
    [[ "$name" != zookeeper ]] || port=$ZK_PORT
    if is_running "$name"; then state=alive; alive=$((alive + 1))
    elif [[ -n "$pid" ]]; then state=dead; stopped=$((stopped + 1))
    else state=stopped; stopped=$((stopped + 1)); fi
    extra=""
    [[ ! -s "$CLUSTER_DIR/$name/http_port" ]] || extra=" (HTTP port $(cat "$CLUSTER_DIR/$name/http_port"))"
    printf '  %-10s %-8s %-7s %-7s %s%s\n' "$name" "${pid:--}" "${port:--}" "$state" \
      "$CLUSTER_DIR/$name/$name.log" "$extra"
  done
  if [[ -n "$ZK_EXTERNAL" ]] || is_running zookeeper; then
    cluster_tool show 2>&1 | sed 's/^/  /' || true
  fi
  if (( alive == 0 )); then return 3; fi
  (( stopped == 0 )) || return 1
}

do_status() {
  [[ -f "$STATE_FILE" ]] || { say "no cluster in $CLUSTER_DIR (deploy/cluster.sh up starts one)"; return 3; }
  check_owner
  resolve_settings recorded
  ZK_PORT="${REC_ZK_PORT:-0}"
  print_status
}

do_logs() {
  local follow=0 name names=() files=()
  [[ "${1:-}" != -f ]] || { follow=1; shift; }
  [[ -f "$STATE_FILE" ]] || die "no cluster in $CLUSTER_DIR"
  check_owner
  resolve_settings recorded
  if (( $# > 0 )); then names=("$@"); else mapfile -t names < <(process_names); fi
  for name in "${names[@]}"; do
    [[ -f "$CLUSTER_DIR/$name/$name.log" ]] || die "no log for '$name' in $CLUSTER_DIR"
    files+=("$CLUSTER_DIR/$name/$name.log")
  done
  if (( follow )); then
    exec tail -n 20 -F "${files[@]}"
  fi
  # tail names each file when given several.
  tail -n "${LOG_LINES:-20}" "${files[@]}"
}

case "${1:-}" in
  up) shift; (( $# == 0 )) || usage_error "up takes no arguments (settings are environment variables)"; do_up ;;
  down) shift; do_down "$@" ;;
  status) shift; (( $# == 0 )) || usage_error "status takes no arguments"; do_status ;;
  logs) shift; do_logs "$@" ;;
  help | -h | --help) usage ;;
  *) usage_error "expected a command: up, down, status, logs or help" ;;
esac
