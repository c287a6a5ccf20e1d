#!/usr/bin/env bash
# Installs what is missing (deploy/setup.sh), then configures and builds into build/.
#   deploy/build.sh                 # RelWithDebInfo
#   BUILD_DIR=build-asan CMAKE_ARGS=-DWALLET_SANITIZE=ON deploy/build.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/setup.sh
BUILD_DIR="${BUILD_DIR:-build}"
# shellcheck disable=SC2086
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" ${CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)"
