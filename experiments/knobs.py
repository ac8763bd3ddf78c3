#!/usr/bin/env python3
"""The search's own parameters at one budget: does any setting of the barrier's t, Prob-1's weight and
start, the warm-up or the architecture learning rate make the searched network beat uniform?

It reuses finished results runs (experiments/results.py), one per seed: each run's BP-NAS spec at the
chosen budget, with the uniform check off (so the test accuracy is the searched network's own) and
one setting changed, against that run's uniform baseline at the same budget.

    python3 experiments/knobs.py --results out/w0125,out/w0125-s2,out/w0125-s3
    python3 experiments/knobs.py --results out/w0125 --only t_low,lambda_20

A finished setting is reused when its spec is unchanged (sha256 in its result file).
"""
import argparse
import json
import os
import statistics
import sys

from runs import run_cached

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> the "search" fields changed (engine defaults: barrier_t 20 -> 200, prob1_lambda 5,
# prob1_start 0.5, warmup_epochs as in the results run, sampled_warmup true, arch_lr 0.05).
SETTINGS = {
    "default": {},
    "t_low": {"barrier_t_start": 5, "barrier_t_end": 50},
    "t_high": {"barrier_t_start": 80, "barrier_t_end": 800},
    "lambda_1": {"prob1_lambda": 1},
    "lambda_20": {"prob1_lambda": 20},
    "prob1_at_start": {"prob1_start": 0.0},
    "prob1_early": {"prob1_start": 0.25},
    "prob1_late": {"prob1_start": 0.75},
    "no_warmup": {"warmup_epochs": 0},
    "plain_warmup": {"sampled_warmup": False},
    "arch_lr_low": {"arch_lr": 0.01},
    "arch_lr_high": {"arch_lr": 0.2},
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", required=True, help="comma-separated folders of finished results runs (one per seed)")
    p.add_argument("--budget", default="bitops-b3.0", help="the budget, as in the results runs' file names")
    p.add_argument("--uniform-bits", type=int, default=3, help="the uniform bitwidth of that budget")
    p.add_argument("--only", default="", help="comma-separated setting names (default: all)")
    p.add_argument("--bin", default=os.path.join(ROOT, "build", "bin", "bpnas"), help="the bpnas binary")
    p.add_argument("--out", default=os.path.join(ROOT, "out", "knobs"), help="output folder")
    return p.parse_args()


def load(path):
    with open(path) as f:
        return json.load(f)


def run_setting(a, folder, name, change):
    spec = load(os.path.join(folder, f"{a.budget}-bpnas.json"))
    spec["search"] = dict(spec.get("search", {}), uniform_check=False, **change)
    if not os.path.isabs(spec.get("init_weights", "")):
        spec["init_weights"] = os.path.abspath(os.path.join(ROOT, spec["init_weights"]))
    tag = os.path.basename(os.path.normpath(folder))
    return run_cached(a.bin, spec, os.path.join(a.out, f"{tag}-{a.budget}-{name}"), f"knobs: {name} on {folder}")


def main():
    a = parse_args()
    os.makedirs(a.out, exist_ok=True)
    folders = [f for f in a.results.split(",") if f]
    names = [n for n in SETTINGS if not a.only or n in a.only.split(",")]
    unknown = set(a.only.split(",")) - set(SETTINGS) - {""}
    if unknown:
        sys.exit(f"knobs: unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(SETTINGS)}")
    uniform = [load(os.path.join(f, f"{a.budget}-uniform{a.uniform_bits}.result.json"))["test_accuracy"]
               for f in folders]
    lines = ["| setting | " + " | ".join(f"seed run {os.path.basename(os.path.normpath(f))}" for f in folders)
             + " | mean vs uniform |",
             "|---|" + "---|" * len(folders) + "---|"]
    for name in names:
        cells, diffs = [], []
        for f, u in zip(folders, uniform):
            r = run_setting(a, f, name, SETTINGS[name])
            d = r["test_accuracy"] - u
            diffs.append(d)
            within = "" if r.get("within_budget") else ", OVER"
            cells.append(f"{r['test_accuracy']:.2f}% ({r['cost'] / r['budget']:.3f}{within}) {d:+.2f}")
            print(f"{name:13s} {f}: acc {r['test_accuracy']:.2f}% cost/budget {r['cost'] / r['budget']:.3f} "
                  f"vs uniform {d:+.2f} ({r['wall_seconds']:.0f}s)", flush=True)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {statistics.mean(diffs):+.2f} |")
    lines.insert(0, "uniform: " + ", ".join(f"{u:.2f}%" for u in uniform) + "\n")
    table = "\n".join(lines) + "\n"
    with open(os.path.join(a.out, f"table-{a.budget}.md"), "w") as f:
        f.write(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
