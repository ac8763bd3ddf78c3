#!/usr/bin/env bash
# Installs every Debian package that building, testing and running the demo of bpnas needs, and
# the one npm package the ONNX Runtime tests use (onnxruntime-node, pinned in
# tests/onnx/package-lock.json, into tests/onnx/node_modules).
# Idempotent: when everything is present it only checks (a second or two) and exits.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git clang-format
  protobuf-compiler libprotobuf-dev protobuf-compiler-grpc libgrpc++-dev libabsl-dev
  libpqxx-dev libpq-dev postgresql
  libonnx-dev
  libtorch-dev libgloo-dev zlib1g-dev
  libcivetweb-dev libssl-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  prometheus
  dataset-fashion-mnist
  python3 python3-matplotlib
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "bootstrap: all ${#PACKAGES[@]} packages present"
else
  echo "bootstrap: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# ONNX Runtime for the tests (tests/onnx): Debian's node and npm where node is missing, then the
# locked onnxruntime-node. Its install script would download CUDA libraries (and fail without a
# network); with ONNXRUNTIME_NODE_INSTALL=skip it keeps the CPU library the package ships.
if ! command -v node > /dev/null 2>&1; then
  echo "bootstrap: installing nodejs npm"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi
lock=tests/onnx/package-lock.json
stamp=tests/onnx/node_modules/.bpnas-lock-sha256
want="$(sha256sum "$lock" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f tests/onnx/node_modules/onnxruntime-node/package.json ]; then
  echo "bootstrap: onnxruntime-node present (tests/onnx)"
else
  echo "bootstrap: npm ci in tests/onnx"
  (cd tests/onnx && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" > "$stamp"
fi
echo "bootstrap: done"
