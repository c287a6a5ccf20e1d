#!/usr/bin/env bash
# Installs every system package the wallet store needs to build, test, benchmark
# and run on Debian 12. Idempotent: packages already present are skipped, and
# `apt-get update` runs only when something is missing.
#
#   deploy/setup.sh            # install what is missing
#   deploy/setup.sh --check    # only list what is missing; exit 1 if anything is
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config git
  # the five libraries the product is built on
  libhiredis-dev libzookeeper-mt-dev libabsl-dev libbenchmark-dev libgtest-dev libgmock-dev
  # well-kept helpers from Debian: XXH3 digests of transaction ids; CRC32C (ISA-L)
  # checksums of the event log and snapshots
  libxxhash-dev libisal-dev
  # the router's HTTP/JSON front end: cpp-httplib (header + compiled library) and
  # nlohmann-json (header-only)
  libcpp-httplib-dev nlohmann-json3-dev
  # servers and tools the tests, benchmarks and main job drive
  redis-server redis-tools zookeeper
  # the JVM that runs ZooKeeper (zookeeper depends on default-jre; named here
  # because the test harness and deploy scripts start java directly)
  default-jre-headless
  # helpers used by scripts
  procps python3
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
  exit 0
fi
if [[ "${1:-}" == "--check" ]]; then
  echo "setup: missing: ${missing[*]}"
  exit 1
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian redis-server and zookeeper packages start system services on install;
# the project starts its own instances on free ports and never uses those.
if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
  $SUDO systemctl disable --now redis-server zookeeper >/dev/null 2>&1 || true
fi
echo "setup: done"
