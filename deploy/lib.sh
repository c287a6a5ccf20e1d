# shellcheck shell=bash
# lib.sh — bash helpers shared by the deploy, test and benchmark scripts (sourced,
# not run). Needs bash 4+ and the tools deploy/setup.sh installs (ss, redis-cli).
#
#   free_port                  prints a loopback TCP port nothing listens on (a moment
#                              ago: another process may take it before you bind it)
#   pid_has_arg PID TEXT       true when process PID is alive (not a zombie) and its
#                              command line contains TEXT: how scripts make sure a pid
#                              read from a file is still the process they started
#                              (pids are reused) before they signal it
#   zk_four_letter PORT WORD   sends a ZooKeeper four-letter word (srvr, ruok, stat)
#                              to 127.0.0.1:PORT and prints the reply (2 s at most)

free_port() {
  local port
  for _ in $(seq 1 100); do
    port=$((20000 + RANDOM % 40000))
    if [[ -z "$(ss -Htln "sport = :$port")" ]]; then echo "$port"; return 0; fi
  done
  return 1
}

pid_has_arg() {
  local pid=$1 text=$2 cmdline
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  # A zombie (or a process gone a moment ago) has an empty command line.
  cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || return 1
  [[ -n "$cmdline" && "$cmdline" == *"$text"* ]]
}

zk_four_letter() {
  local port=$1 word=$2
  # shellcheck disable=SC2016  # $0 and $1 are the inner shell's
  timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" && printf "%s" "$1" >&3 && cat <&3' \
    "$port" "$word" 2>/dev/null
}
