#!/usr/bin/env bash
# Runs the demo configuration (examples/fashion-mnist.json) at several budgets plus the uniform
# baselines at the same total epochs, and prints a Markdown table. Usage:
#   scripts/budget_table.sh [OUT_DIR]     (default out/budgets; about 15 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-out/budgets}"
mkdir -p "$out"
bin=./build/bin/bpnas
base=examples/fashion-mnist.json

run() {  # name, jq-free JSON patch applied with python3
  local name="$1" patch="$2"
  python3 - "$base" "$out/$name.json" "$patch" <<'PY'
import json, sys
spec = json.load(open(sys.argv[1]))
patch = json.loads(sys.argv[3])
for k, v in patch.items():
    if isinstance(v, dict) and isinstance(spec.get(k), dict):
        spec[k].update(v)
    else:
        spec[k] = v
json.dump(spec, open(sys.argv[2], "w"), indent=2)
PY
  local t0=$(date +%s.%N)
  "$bin" search --spec "$out/$name.json" --out "$out/$name.bpq" --json > "$out/$name.result.json" 2> "$out/$name.log"
  local t1=$(date +%s.%N)
  python3 -c "print(f'{$t1-$t0:.0f}')" > "$out/$name.seconds"
  echo "done: $name" >&2
}

run bitops-u3 '{"constraint": {"metric": "BITOPS", "max_relative_to_uniform_bits": 3}}'
run bitops-u4 '{"constraint": {"metric": "BITOPS", "max_relative_to_uniform_bits": 4}}'
run bitops-u6 '{"constraint": {"metric": "BITOPS", "max_relative_to_uniform_bits": 6}}'
run size-u3 '{"constraint": {"metric": "SIZE", "max_relative_to_uniform_bits": 3}}'
run uniform-3 '{"method": "UNIFORM", "uniform_bits": 3, "constraint": {"metric": "BITOPS", "max_relative_to_uniform_bits": 3}}'
run uniform-4 '{"method": "UNIFORM", "uniform_bits": 4, "constraint": {"metric": "BITOPS", "max_relative_to_uniform_bits": 4}}'

python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
print("| run | metric | budget | cost | cost/budget | within | test acc | bits (w/a per layer) | wall s |")
print("|---|---|---|---|---|---|---|---|---|")
for name in ["bitops-u3", "bitops-u4", "bitops-u6", "size-u3", "uniform-3", "uniform-4"]:
    r = json.load(open(os.path.join(out, name + ".result.json")))
    secs = open(os.path.join(out, name + ".seconds")).read().strip()
    bits = " ".join(f"{l.get('weight_bits')}/{l.get('activation_bits')}" for l in r.get("layers", []))
    print(f"| {name} | {r['metric']} | {r['budget']:.4g} | {r['cost']:.4g} | {r['cost']/r['budget']:.3f} | "
          f"{'yes' if r.get('within_budget') else 'NO'} | {r['test_accuracy']:.2f}% | {bits} | {secs} |")
PY
