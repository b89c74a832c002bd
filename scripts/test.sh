#!/usr/bin/env bash
# The test command: installs what is missing, builds, runs the unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cd "${MOEJET_BUILD_DIR:-build}"
ctest --output-on-failure -j"$(nproc)" -L "unit|integration" --timeout 900
