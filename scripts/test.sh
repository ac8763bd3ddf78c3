#!/usr/bin/env bash
# Quick start, step 2: build (if needed) and run every test. GPU tests skip without a GPU.
#   ./scripts/test.sh            everything (what CI runs)
#   ./scripts/test.sh --fast     everything but the end-to-end tests (-LE e2e): unit, store, service
# Other arguments go to ctest (e.g. -L store, -R Search).
set -euo pipefail
cd "$(dirname "$0")/.."
args=()
for a in "$@"; do
  if [ "$a" = "--fast" ]; then args+=(-LE e2e); else args+=("$a"); fi
done
./scripts/bootstrap.sh
./scripts/build.sh
cd build
ctest --output-on-failure -j "${BPNAS_JOBS:-$(nproc)}" "${args[@]+"${args[@]}"}"
