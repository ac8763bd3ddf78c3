#!/usr/bin/env bash
# ONNX Runtime latency, QDQ export vs FP32 export of the same network (bench/onnx_latency.mjs).
#   bench/onnx_latency.sh [BUILD_DIR] [MODEL.bpq]
# Without MODEL.bpq: a random resnet20 (width 1) with every layer at 4 bits, per-channel scales.
# Needs node and tests/onnx/node_modules (scripts/bootstrap.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$(cd "${1:-$root/build}" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
model="${2:-}"
if [ -z "$model" ]; then
  model="$work/resnet20-4bit.bpq"
  "$build/bin/bpnas_make_random_model" --graph resnet20 --width 1 --bits 4 --seed 1 -o "$model"
fi
"$build/bin/bpnas" export "$model" -o "$work/qdq.onnx"
"$build/bin/bpnas" export "$model" -o "$work/float.onnx" --float
echo "model $model; ONNX Runtime $(node -p "require('$root/tests/onnx/node_modules/onnxruntime-node/package.json').version"), CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
node "$root/bench/onnx_latency.mjs" "$work/qdq.onnx" "$work/float.onnx" "${BENCH_SECONDS:+--seconds}" ${BENCH_SECONDS:-}
