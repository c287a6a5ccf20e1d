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
#   zookeeper_config DIR PORT FORCE_SYNC
#                              writes DIR/zoo.cfg (standalone, 127.0.0.1:PORT, data in
#                              DIR/data, forceSync=FORCE_SYNC yes|no, admin server off,
#                              four-letter words ruok/srvr/stat) and DIR/log4j.properties,
#                              and sets ZOOKEEPER_ARGV to the java command that runs that
#                              server from Debian's zookeeper package (ZK_JAR)

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

ZK_JAR=/usr/share/java/zookeeper.jar
ZK_MAIN=org.apache.zookeeper.server.ZooKeeperServerMain

zookeeper_config() {
  local dir=$1 port=$2 sync=$3 classpath jar
  mkdir -p "$dir/data"
  cat >"$dir/zoo.cfg" <<EOF
# Written by deploy/lib.sh zookeeper_config (a standalone ZooKeeper on loopback).
tickTime=2000
dataDir=$dir/data
clientPort=$port
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat
forceSync=$sync
autopurge.snapRetainCount=3
autopurge.purgeInterval=1
EOF
  cat >"$dir/log4j.properties" <<'EOF'
log4j.rootLogger=WARN, CONSOLE
log4j.logger.org.apache.zookeeper.server.ZooKeeperServer=INFO
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} %-5p [%t] %c{1}: %m%n
EOF
  # Debian's classpath (zkEnv.sh: the conf folder and zookeeper.jar, whose manifest
  # lists its dependencies) plus the slf4j -> log4j binding, so the log is written.
  classpath="$dir:$ZK_JAR"
  for jar in /usr/share/java/slf4j-log4j12.jar /usr/share/java/log4j-1.2.jar; do
    [[ -r "$jar" ]] && classpath+=":$jar"
  done
  # shellcheck disable=SC2034  # used by the callers
  ZOOKEEPER_ARGV=(java -Xms64m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData
    -Djava.awt.headless=true -Dzookeeper.jmx.log4j.disable=true "-Dzookeeper.log.dir=$dir"
    -cp "$classpath" "$ZK_MAIN" "$dir/zoo.cfg")
}
