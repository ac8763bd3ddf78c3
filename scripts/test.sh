#!/usr/bin/env bash
# Quick start, step 2: build (if needed) and run every test. GPU tests skip without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
./scripts/build.sh
cd build
ctest --output-on-failure -j "${BPNAS_JOBS:-$(nproc)}" "$@"
