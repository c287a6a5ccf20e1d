#!/usr/bin/env bash
# txops.sh — inspect and resolve cross-shard transactions (TC/C and saga) that are
# in doubt, through a router (docs/api.md: TX, TX.INDOUBT, TX.RESOLVE), with
# redis-cli. For operators; the routers' resolvers finish rows in doubt on their own,
# this is for the ones that stay stuck (a shard gone for good, a bug).
#
#   deploy/txops.sh indoubt [min_age_ms] [--count N] [--details]
#                   txids of unfinished transactions, from every shard, one per line
#                   (not updated for min_age_ms; without it, the router's default;
#                   at most N per shard); --details adds mode, phase, decision,
#                   from, to, amount and the shard of each
#   deploy/txops.sh show TXID
#                   the transaction's record (TX): field and value per line; for a
#                   cross-shard one the phase row's fields are prefixed row.
#   deploy/txops.sh resolve TXID confirm|cancel
#                   drives the transaction to that end (TX.RESOLVE); the router only
#                   accepts the safe direction (e.g. no confirm before the credit was
#                   reserved, nothing against a written decision); then shows it, and
#                   fails if it has ended the other way
#   deploy/txops.sh help
#
# Options (anywhere on the line):
#   --router HOST:PORT    the router to ask (default: router-0 of the local cluster
#                         deploy/cluster.sh runs in CLUSTER_DIR, from its port file)
#   --password-file FILE  a file whose first line is the router's AUTH password
#                         (default: the local cluster's PASSWORD_FILE when --router is
#                         not given; REDISCLI_AUTH from the environment otherwise)
#
# Settings (environment): CLUSTER_DIR (default ${WALLET_CLUSTER_DIR:-/tmp/wallet-cluster}),
# as deploy/cluster.sh. The password never appears on a command line (REDISCLI_AUTH).
#
# Exit status: 0 done; 1 failed (the router refused or could not be reached; the
# reason on stderr); 2 bad usage; 3 `show`: no shard knows the transaction.
set -euo pipefail

die() { echo "txops: error: $*" >&2; exit 1; }
usage_error() { echo "txops: $* (see: deploy/txops.sh help)" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

CLUSTER_DIR="${CLUSTER_DIR:-${WALLET_CLUSTER_DIR:-/tmp/wallet-cluster}}"
[[ "$CLUSTER_DIR" == /* ]] || CLUSTER_DIR="$PWD/$CLUSTER_DIR"
CLUSTER_DIR="${CLUSTER_DIR%/}"

# --- arguments ------------------------------------------------------------------

ROUTER="" PASSWORD_FILE_ARG="" COUNT="" DETAILS=0
ARGS=()
while (( $# > 0 )); do
  case "$1" in
    --router) (( $# >= 2 )) || usage_error "--router needs HOST:PORT"; ROUTER=$2; shift 2 ;;
    --router=*) ROUTER=${1#*=}; shift ;;
    --password-file) (( $# >= 2 )) || usage_error "--password-file needs a file"; PASSWORD_FILE_ARG=$2; shift 2 ;;
    --password-file=*) PASSWORD_FILE_ARG=${1#*=}; shift ;;
    --count) (( $# >= 2 )) || usage_error "--count needs a number"; COUNT=$2; shift 2 ;;
    --count=*) COUNT=${1#*=}; shift ;;
    --details) DETAILS=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; ARGS+=("$@"); break ;;
    -*) usage_error "unknown option '$1'" ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
set -- "${ARGS[@]+"${ARGS[@]}"}"

# A txid as the API takes it: 1-64 visible ASCII characters.
valid_txid() { [[ "$1" =~ ^[!-~]{1,64}$ ]]; }

# --- the router and its password --------------------------------------------------

# The local cluster's recorded PASSWORD_FILE ("" when none), read from cluster.env
# in a subshell (only when the file is this user's: it is sourced).
recorded_password_file() {
  local state="$CLUSTER_DIR/cluster.env"
  [[ -f "$state" ]] || return 0
  [[ -O "$state" ]] || die "$state belongs to another user: give --router and --password-file"
  # shellcheck source=/dev/null
  (source "$state" && printf '%s' "${REC_PASSWORD_FILE:-}")
}

resolve_router() {
  local port password_file=$PASSWORD_FILE_ARG
  if [[ -z "$ROUTER" ]]; then
    port="$(head -n1 "$CLUSTER_DIR/router-0/port" 2>/dev/null | tr -d '[:space:]' || true)"
    [[ -n "$port" ]] ||
      die "no router port in $CLUSTER_DIR/router-0/port: is the local cluster up with a router (deploy/cluster.sh status)? Or give --router HOST:PORT"
    ROUTER="127.0.0.1:$port"
    [[ -n "$password_file" ]] || password_file="$(recorded_password_file)"
  fi
  [[ "$ROUTER" =~ ^([^:]+):([0-9]{1,5})$ ]] || usage_error "--router must be HOST:PORT, not '$ROUTER'"
  HOST=${BASH_REMATCH[1]}
  PORT=${BASH_REMATCH[2]}
  if [[ -n "$password_file" ]]; then
    [[ -r "$password_file" && -n "$(head -n1 "$password_file" | tr -d '\r')" ]] ||
      die "$password_file is not a readable file with a password on its first line"
    export REDISCLI_AUTH; REDISCLI_AUTH="$(head -n1 "$password_file" | tr -d '\r')"
  fi
}

# call ARG...: one command to the router; its reply (raw, one element per line) on
# stdout. An error reply or a failed connection ends the script with status 1.
call() {
  local out err status=0
  err="$(mktemp)"
  out="$(redis-cli -e --no-auth-warning -h "$HOST" -p "$PORT" "$@" 2>"$err")" || status=$?
  if (( status != 0 )); then
    local why
    why="$(grep -v '^$' "$err" | tail -n 3 || true)"
    rm -f "$err"
    [[ -n "$why" ]] || why="$out"
    die "$1 through $HOST:$PORT failed: ${why:-redis-cli exit $status}"
  fi
  rm -f "$err"
  printf '%s\n' "$out"
}

# print_fields: "field value" lines read as alternating lines on stdin.
print_fields() {
  local field value
  while IFS= read -r field && IFS= read -r value; do
    printf '%-22s %s\n' "$field" "$value"
  done
}

# --- commands ---------------------------------------------------------------------

do_indoubt() {
  (( $# <= 1 )) || usage_error "indoubt takes at most min_age_ms"
  local args=() txid count=0 reply line
  if (( $# == 1 )); then
    [[ "$1" =~ ^[0-9]{1,12}$ ]] || usage_error "min_age_ms must be a number of milliseconds, not '$1'"
    args+=("$1")
  fi
  if [[ -n "$COUNT" ]]; then
    if [[ ! "$COUNT" =~ ^[0-9]{1,5}$ ]] || (( 10#$COUNT < 1 || 10#$COUNT > 10000 )); then
      usage_error "--count must be a number from 1 to 10000, not '$COUNT'"
    fi
    args+=(COUNT "$COUNT")
  fi
  resolve_router
  reply="$(call TX.INDOUBT "${args[@]+"${args[@]}"}")"
  while IFS= read -r txid; do
    [[ -n "$txid" ]] || continue
    count=$((count + 1))
    if (( DETAILS )); then
      line="$(details "$txid")"
      printf '%s\t%s\n' "$txid" "$line"
    else
      printf '%s\n' "$txid"
    fi
  done <<<"$reply"
  echo "txops: $count transaction(s) in doubt (router $HOST:$PORT)" >&2
}

# details TXID: "mode=… phase=… decision=… from=… to=… amount=… shard=…" from TX.
details() {
  local -A f=()
  local field value out="" key reply
  reply="$(call TX "$1")"
  while IFS= read -r field && IFS= read -r value; do f[$field]=$value; done <<<"$reply"
  (( ${#f[@]} > 0 )) || { echo "(no record: finished and collected, or never seen)"; return 0; }
  for key in kind row.phase row.decision row.from row.to row.amount row.currency row.attempts row.updated_ms shard; do
    [[ -z "${f[$key]:-}" ]] || out+="${key#row.}=${f[$key]} "
  done
  printf '%s' "${out% }"
}

do_show() {
  (( $# == 1 )) || usage_error "show takes one txid"
  valid_txid "$1" || usage_error "a txid is 1-64 visible ASCII characters, not '$1'"
  resolve_router
  local reply
  reply="$(call TX "$1")"
  if [[ -z "$reply" ]]; then
    echo "txops: no shard knows transaction '$1' (never seen, refused before it ran, or finished longer ago than the idempotency window)" >&2
    exit 3
  fi
  print_fields <<<"$reply"
}

do_resolve() {
  (( $# == 2 )) || usage_error "resolve takes a txid and confirm or cancel"
  valid_txid "$1" || usage_error "a txid is 1-64 visible ASCII characters, not '$1'"
  [[ "$2" == confirm || "$2" == cancel ]] || usage_error "resolve: expected confirm or cancel, not '$2'"
  resolve_router
  local reply record phase
  reply="$(call TX.RESOLVE "$1" "$2")"
  echo "txops: TX.RESOLVE $1 $2: $reply"
  record="$(call TX "$1")"
  print_fields <<<"$record"
  # The row's phase now, as a check of the reply: a transaction that had already
  # ended the other way is reported, not taken for resolved.
  phase="$(awk 'NR % 2 == 1 && $0 == "row.phase" { getline; print; exit }' <<<"$record")"
  case "$2:$phase" in
    confirm:aborted | confirm:cancelling | cancel:committed | cancel:confirming)
      die "$1 is $phase, not resolved to $2 (the router answered '$reply')" ;;
  esac
}

case "${1:-}" in
  indoubt) shift; do_indoubt "$@" ;;
  show) shift; do_show "$@" ;;
  resolve) shift; do_resolve "$@" ;;
  help) usage ;;
  "") usage_error "expected a command: indoubt, show, resolve or help" ;;
  *) usage_error "unknown command '$1': expected indoubt, show, resolve or help" ;;
esac
