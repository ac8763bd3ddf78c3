#!/usr/bin/env bash
# Builds the artifact fuzzer (fuzz/artifact_fuzzer.cc) with clang-14 and libFuzzer, AddressSanitizer
# and UndefinedBehaviorSanitizer, in its own build folder without LibTorch, writes a seed corpus
# from MakeRandomModel, and fuzzes for SECONDS (default 60). Exit 0: no crash; otherwise the crashing
# input is in BUILD/fuzz-crashes/ (reproduce: BUILD/bin/artifact_fuzzer FILE).
#   scripts/fuzz.sh [SECONDS]
# Environment: BPNAS_FUZZ_BUILD (build folder, default build-fuzz), BPNAS_JOBS (build jobs, 2),
# CLANG (clang++-14).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
build=${BPNAS_FUZZ_BUILD:-build-fuzz}
cxx=${CLANG:-clang++-14}
sanitize="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fsanitize=fuzzer-no-link"
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$cxx" \
    -DCMAKE_CXX_FLAGS="$sanitize -fno-omit-frame-pointer" \
    -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
    -DBPNAS_WITH_TORCH=OFF -DBPNAS_BUILD_TESTS=OFF -DBPNAS_BUILD_BENCH=OFF -DBPNAS_BUILD_FUZZ=ON > /dev/null
fi
cmake --build "$build" --target artifact_fuzzer artifact_fuzz_seeds -j "${BPNAS_JOBS:-2}"
seeds="$build/fuzz-seeds"
corpus="$build/fuzz-corpus"  # what the fuzzer found, kept between runs
crashes="$build/fuzz-crashes"
rm -rf "$seeds"
mkdir -p "$seeds" "$corpus" "$crashes"
"$build/bin/artifact_fuzz_seeds" "$seeds"
# 64 KiB inputs cover the seeds (a few KiB each) and room to grow; 2 GiB of memory at most.
"$build/bin/artifact_fuzzer" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
  -print_final_stats=1 -artifact_prefix="$crashes/" "$corpus" "$seeds"
