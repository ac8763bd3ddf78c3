#!/usr/bin/env bash
# Runs one ONNX Runtime ctest case (onnx_e2e.mjs), or skips it (exit 77, ctest's SKIP_RETURN_CODE)
# saying why when node or the onnxruntime-node package is missing: scripts/bootstrap.sh installs
# both, and CI runs it first, so there the cases run.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if ! command -v node > /dev/null 2>&1; then
  echo "skipped: node is not installed (scripts/bootstrap.sh installs nodejs and tests/onnx/node_modules)"
  exit 77
fi
if [ ! -f "$here/node_modules/onnxruntime-node/package.json" ]; then
  echo "skipped: onnxruntime-node is not installed in tests/onnx (run scripts/bootstrap.sh)"
  exit 77
fi
exec node "$here/onnx_e2e.mjs" "$@"
