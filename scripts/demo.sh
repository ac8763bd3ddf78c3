#!/usr/bin/env bash
# Quick start, step 1: install what is missing, build, and run the demo search through the service:
# `bpnas up` (a private PostgreSQL under out/state, the coordinator and one worker), then submit
# examples/fashion-mnist.json, watch it, fetch the model and evaluate it from the file alone (fake-quantized
# and integer-only), then export it to ONNX and run it with ONNX Runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
./scripts/build.sh
mkdir -p out
BPNAS=./build/bin/bpnas
SERVER=127.0.0.1:${BPNAS_DEMO_PORT:-50051}
HTTP=127.0.0.1:${BPNAS_DEMO_HTTP_PORT:-9464}

$BPNAS cost --spec examples/fashion-mnist.json

$BPNAS up --workers 1 --state out/state --listen "$SERVER" --http "$HTTP" > out/up.log 2>&1 &
UP_PID=$!
trap 'kill -INT $UP_PID 2>/dev/null; wait $UP_PID 2>/dev/null || true' EXIT
for _ in $(seq 120); do
  if $BPNAS list --server "$SERVER" --timeout 1 > /dev/null 2>&1; then break; fi
  if ! kill -0 $UP_PID 2>/dev/null; then cat out/up.log; exit 1; fi
  sleep 0.5
done
cat out/up.log

JOB=$($BPNAS submit examples/fashion-mnist.json --server "$SERVER")
echo "submitted job $JOB"
$BPNAS watch "$JOB" --server "$SERVER"
$BPNAS fetch "$JOB" -o out/fashion-mnist.bpq --server "$SERVER"
$BPNAS eval out/fashion-mnist.bpq --data /usr/share/datasets/fashion-mnist
# The integer-only reference (int32 accumulation, dyadic requantization) against the fake-quantized one.
$BPNAS eval out/fashion-mnist.bpq --integer --data /usr/share/datasets/fashion-mnist
# The same model as a standard ONNX QDQ graph, run by ONNX Runtime (onnxruntime-node) outside bpnas.
$BPNAS export out/fashion-mnist.bpq -o out/fashion-mnist.onnx
node tests/onnx/run_onnx.mjs predict --model out/fashion-mnist.onnx --data /usr/share/datasets/fashion-mnist
echo "metrics: curl http://$HTTP/metrics   (while 'bpnas up' runs)"
