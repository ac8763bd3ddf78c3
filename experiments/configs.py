#!/usr/bin/env python3
"""Hand-made bit configurations at one budget: what does each stage's weight or activation precision
buy, and how far above uniform can any configuration get under the same protocol?

It reuses a results run (experiments/results.py): its pretrained weights and the uniform baseline's
spec at the chosen budget, so every configuration here is fine-tuned exactly like the methods there
(same starting weights, schedule, sampler and seed). A configuration equal to a searched one gives
the searched model's accuracy to the last digit (method FIXED trains like UNIFORM).

    python3 experiments/configs.py --results out/w025                # BitOPs, uniform 3-bit budget
    python3 experiments/configs.py --results out/w025 --seeds 1,2    # more seeds
    python3 experiments/configs.py --results out/w025 --finetune-epochs 3 --out out/w025/configs-ft3

Configurations (resnet20: 3 stages of 6 searchable convs; "sN_WA" sets stage N to W/A bits and
leaves the rest at the uniform bits):
    uniform, bpnas (the results run's searched configuration at this budget), w2a4 and w4a2 (every
    layer), sN_22 sN_23 sN_32 sN_24 sN_34 sN_43 sN_44 (one stage changed), and two mixes built from
    the stage map: mix1 (stage 1 W3A4, stage 3 W2A3), mix1_fit (mix1 with one stage-2 layer at
    W2A3, inside the budget) and mix2 (stage 1 W2A4, stage 2 W3A4, stage 3 W2A3: the three single-stage
    changes that gained most per unit of cost, together).
Over-budget configurations run under a looser constraint; the table reports cost / budget.
"""
import argparse
import json
import os

from runs import run_cached

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", required=True, help="folder of a finished experiments/results.py run")
    p.add_argument("--metric", default="bitops", choices=["bitops", "size"])
    p.add_argument("--bits", default="3.0", help="the budget, as in the results run's file names (3.0)")
    p.add_argument("--uniform-bits", type=int, default=3, help="the uniform bitwidth of that budget")
    p.add_argument("--seeds", default="1", help="comma-separated seeds; each configuration runs once per seed")
    p.add_argument("--only", default="", help="comma-separated configuration names (default: all)")
    p.add_argument("--bin", default=os.path.join(ROOT, "build", "bin", "bpnas"), help="the bpnas binary")
    p.add_argument("--out", default="", help="output folder (default: RESULTS/configs)")
    p.add_argument("--finetune-epochs", type=int, default=0,
                   help="fine-tune epochs for every configuration (default: the results run's)")
    return p.parse_args()


def configurations(u, searched):
    stage = lambda n: range(6 * (n - 1), 6 * n)
    base = [(u, u)] * 18
    out = {"uniform": base}
    if searched:
        out["bpnas"] = searched
    out["w2a4"] = [(2, 4)] * 18
    out["w4a2"] = [(4, 2)] * 18
    for n in (1, 2, 3):
        for name in ("22", "23", "32", "24", "34", "43", "44"):
            c = list(base)
            for i in stage(n):
                c[i] = (int(name[0]), int(name[1]))
            out[f"s{n}_{name}"] = c
    mix = list(base)
    for i in stage(1):
        mix[i] = (u, u + 1)
    for i in stage(3):
        mix[i] = (u - 1, u)
    out["mix1"] = mix
    fit = list(mix)
    fit[9] = (u - 1, u)  # layer2.1.conv2
    out["mix1_fit"] = fit
    mix = list(base)
    for i in stage(1):
        mix[i] = (u - 1, u + 1)
    for i in stage(2):
        mix[i] = (u, u + 1)
    for i in stage(3):
        mix[i] = (u - 1, u)
    out["mix2"] = mix
    return out


def main():
    a = parse_args()
    out = a.out or os.path.join(a.results, "configs")
    os.makedirs(out, exist_ok=True)
    prefix = f"{a.metric}-b{a.bits}"
    with open(os.path.join(a.results, f"{prefix}-uniform{a.uniform_bits}.json")) as f:
        base = json.load(f)
    searched = None
    bp = os.path.join(a.results, f"{prefix}-bpnas.result.json")
    if os.path.exists(bp):
        with open(bp) as f:
            searched = [(l["weight_bits"], l["activation_bits"]) for l in json.load(f)["layers"]]
    configs = configurations(a.uniform_bits, searched)
    if len(base["init_weights"]) and not os.path.isabs(base["init_weights"]):
        base["init_weights"] = os.path.abspath(os.path.join(ROOT, base["init_weights"]))
    budget = None
    names = [n for n in configs if not a.only or n in a.only.split(",")]
    rows = []
    for seed in [int(s) for s in a.seeds.split(",")]:
        for name in names:
            spec = dict(base)
            spec.pop("uniform_bits", None)
            spec["method"] = "FIXED"
            spec["seed"] = seed
            if a.finetune_epochs > 0:
                spec["finetune"] = dict(spec["finetune"], epochs=a.finetune_epochs)
            # A loose constraint, so over-budget configurations run too; cost/budget below uses the
            # real budget (that of the uniform configuration at --bits).
            spec["constraint"] = {"metric": base["constraint"]["metric"], "max_relative_to_uniform_bits": 8.0}
            spec["layer_bits"] = [{"weight_bits": w, "activation_bits": x} for w, x in configs[name]]
            res = run_cached(a.bin, spec, os.path.join(out, f"{name}-s{seed}"), f"{name} (seed {seed})")
            if budget is None:
                with open(os.path.join(a.results, f"{prefix}-uniform{a.uniform_bits}.result.json")) as f:
                    budget = json.load(f)["budget"]
            rows.append((name, seed, res["test_accuracy"], res["cost"] / budget))
            print(f"{name:10s} seed {seed}  acc {res['test_accuracy']:6.2f}  cost/budget {res['cost'] / budget:.3f}",
                  flush=True)
    ref = {s: acc for n, s, acc, _ in rows if n == "uniform"}
    lines = ["| configuration | seed | cost/budget | test acc | vs uniform |", "|---|---|---|---|---|"]
    for n, s, acc, ratio in rows:
        diff = f"{acc - ref[s]:+.2f}" if s in ref else ""
        lines.append(f"| {n} | {s} | {ratio:.3f} | {acc:.2f}% | {diff} |")
    # One table per selection, so a later run with --only or other seeds does not overwrite the map.
    tag = ("all" if not a.only else a.only.replace(",", "+")) + "-seeds" + a.seeds.replace(",", "+")
    with open(os.path.join(out, f"table-{tag}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
