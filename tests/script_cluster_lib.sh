# script_cluster_lib.sh — what the shell tests that run deploy/cluster.sh share.
# Sourced after ROOT, BUILD_DIR and WORK are set (WORK: the test's own temporary
# folder, removed at exit). Sets CLUSTER (the script's command) and CLUSTER_DIR,
# clears the cluster settings the caller's environment may hold, defines fail, step,
# survivors and a cleanup trap that takes the cluster down by pid (also on failure,
# with its status and logs), kills nothing but what it finds running from
# CLUSTER_DIR, removes WORK and prints PASS or FAILED.
# shellcheck shell=bash
# shellcheck source=deploy/lib.sh
source "$ROOT/deploy/lib.sh"
CLUSTER=(bash "$ROOT/deploy/cluster.sh")
# Only what the test sets reaches the script (CLUSTER_DIR and the settings).
unset WALLET_CLUSTER_DIR CLUSTER_NAME SHARDS ROUTERS BASE_PORT FSYNC PASSWORD_FILE ZK KEEP_ON_FAILURE
export CLUSTER_DIR="$WORK/cluster" BUILD_DIR PARTITIONS=16 UP_TIMEOUT_S=60 STOP_GRACE_S=5

fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "--- $*"; }

# The pids of processes whose command line names the cluster folder: after `down`,
# none may be left.
survivors() {
  local dir
  for dir in /proc/[0-9]*; do
    pid_has_arg "${dir#/proc/}" "$CLUSTER_DIR/" && echo "${dir#/proc/}"
  done
  return 0
}

cleanup() {
  local status=$? left
  if [[ -f "$CLUSTER_DIR/cluster.env" ]]; then
    if (( status != 0 )); then
      echo "--- status and logs at the failure:"
      "${CLUSTER[@]}" status || true
      LOG_LINES=15 "${CLUSTER[@]}" logs || true
    fi
    "${CLUSTER[@]}" down >/dev/null 2>&1 || echo "cleanup: down failed"
  fi
  left="$(survivors)"
  if [[ -n "$left" ]]; then
    echo "FAIL: processes left after down: $left"
    for pid in $left; do kill -KILL "$pid" 2>/dev/null || true; done  # pids read just now, ours
    status=1
  fi
  rm -rf "$WORK"
  (( status == 0 )) && echo "PASS" || echo "FAILED (exit $status)"
  exit "$status"
}
trap cleanup EXIT
