#!/usr/bin/env bash
# Two training processes on one machine: the search phase's wall time of `bpnas search` alone and
# with a second identical search running beside it, for each bpnas binary given (e.g. a build before
# and after a change), all in this run. Each process uses every core (the spec's threads = 0), as a
# user's process would. Prints one line per binary: alone, side by side (mean of the two), slowdown.
#
#   bench/two_process.sh build/bin/bpnas [OTHER/bin/bpnas ...]
#
# The OpenMP wait policy comes from the binary (bpnas waits passively unless OMP_WAIT_POLICY is
# set); this script unsets OMP_WAIT_POLICY so that each binary runs with its own default.
set -euo pipefail
data=/usr/share/datasets/fashion-mnist
[ -d "$data" ] || { echo "needs the dataset-fashion-mnist package ($data)"; exit 2; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat > "$dir/spec.json" <<'JSON'
{
  "model": {"name": "resnet20", "width_multiplier": 0.5},
  "dataset": {"kind": "fashion-mnist", "train_limit": 4000, "test_limit": 500},
  "constraint": {"metric": "BITOPS", "max_relative_to_uniform_bits": 3},
  "search": {"warmup_epochs": 1, "epochs": 2, "batch_size": 128, "uniform_check": false},
  "finetune": {"epochs": 1},
  "seed": 1
}
JSON

search_seconds() {  # the "search" phase time from a result printed with --json
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print([p["seconds"] for p in r["phase_times"] if p["phase"]=="search"][0])' "$1"
}
run() {  # run BIN TAG
  env -u OMP_WAIT_POLICY "$1" search --spec "$dir/spec.json" --out "$dir/$2.bpq" --json --quiet > "$dir/$2.json" 2> "$dir/$2.err" || { cat "$dir/$2.err"; exit 1; }
}

for bin in "$@"; do
  run "$bin" alone
  alone=$(search_seconds "$dir/alone.json")
  run "$bin" a & pa=$!
  run "$bin" b & pb=$!
  wait $pa; wait $pb
  a=$(search_seconds "$dir/a.json"); b=$(search_seconds "$dir/b.json")
  python3 -c 'import sys; al,a,b=map(float,sys.argv[2:5]); m=(a+b)/2; print(f"{sys.argv[1]}: search phase alone {al:.1f} s, two at once {m:.1f} s each ({a:.1f}, {b:.1f}): {m/al:.2f}x slower")' "$bin" "$alone" "$a" "$b"
done
