#!/usr/bin/env bash
# Quick start, step 1: install what is missing, build, and run the demo search on Fashion-MNIST.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
./scripts/build.sh
mkdir -p out
./build/bin/bpnas cost --spec examples/fashion-mnist.json
./build/bin/bpnas search --spec examples/fashion-mnist.json --out out/fashion-mnist.bpq
./build/bin/bpnas eval out/fashion-mnist.bpq --data /usr/share/datasets/fashion-mnist
