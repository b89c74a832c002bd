#!/usr/bin/env bash
# The test command: installs what is missing, builds, runs the unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cd "${MOEJET_BUILD_DIR:-build}"
# ctest runs one test per core: one compute thread each, or their OpenMP pools oversubscribe the
# cores (moejet otherwise takes one thread per CPU). nproc itself obeys OMP_NUM_THREADS: count first.
jobs=$(nproc)
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} ctest --output-on-failure -j"$jobs" -L "unit|integration" --timeout 900
