#!/usr/bin/env python3
"""The accuracy effects of the format-2 artifact: batch norm folded in the fine-tune, and per-channel
weight scales, at the 3- and 4-bit BitOPs budgets of the main results table (docs/results.md).

    python3 experiments/artifact_effects.py --baseline-bin OLD/bpnas [--out out/artifact]

Same protocol as the main table (resnet20 width 0.5, Fashion-MNIST, one shared 3-epoch FP32
pretraining, BP-NAS with a 1-epoch warm-up, a 1-epoch search, the uniform check and a 1-epoch
fine-tune from the FP32 weights, seed 1), in one run of this script:

1. The choice of the default (per-channel scales or not) is made on a validation split: 10,000
   training images held out of every phase (dataset.validation_count), both variants, both budgets.
2. The effects are reported on the test set, on all 60,000 training images: the baseline binary
   (an engine from before format 2: batch norm a float affine after each conv, trained unfolded)
   against this engine with folding, per tensor and per channel.
3. The same for the uniform network at the budget's bits (fine-tune only), where both engines train
   the same architecture.

Finished runs are reused when their spec is unchanged (experiments/runs.py).
"""
import argparse
import json
import os
import subprocess
import sys

from runs import run_cached

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=os.path.join(ROOT, "build", "bin", "bpnas"))
    p.add_argument("--baseline-bin", required=True, help="a bpnas from before format 2 (unfolded batch norm)")
    p.add_argument("--out", default=os.path.join(ROOT, "out", "artifact"))
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--bits", default="3,4", help="BitOPs budgets as uniform-equivalent bits")
    p.add_argument("--validation", type=int, default=10000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--test-variants", default="tensor,channel",
                   help="which folded variants step 2 runs on the test set (tensor, channel)")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)

    base = {
        "model": {"name": "resnet20", "width_multiplier": 0.5},
        "dataset": {"kind": "fashion-mnist", "path": a.data, "train_limit": 0, "test_limit": 0},
        "search": {"warmup_epochs": 1, "epochs": 1, "batch_size": 128, "lower_band": 0.9,
                   "budget_target": 0.95, "start_ratio": 0.95},
        "finetune": {"epochs": 1, "lr": 0.02, "from_init": True},
        "seed": a.seed,
        "method": "BPNAS",
    }
    weights = os.path.join(a.out, "fp32.pt")
    if not os.path.exists(weights):
        spec = json.loads(json.dumps(base))
        with open(os.path.join(a.out, "pretrain.json"), "w") as f:
            json.dump(spec, f)
        r = subprocess.run([a.bin, "pretrain", "--spec", os.path.join(a.out, "pretrain.json"), "--out", weights,
                            "--epochs", "3", "--json"], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit("pretrain failed:\n" + r.stderr[-2000:])
        print("pretrained FP32:", r.stdout.strip(), flush=True)

    def spec_for(bits, per_channel=None, validation=0):
        s = json.loads(json.dumps(base))
        s["init_weights"] = weights
        s["constraint"] = {"metric": "BITOPS", "max_relative_to_uniform_bits": bits}
        if per_channel is not None:
            s["finetune"]["per_channel_weights"] = per_channel
        if validation:
            s["dataset"]["validation_count"] = validation
        return s

    rows = []
    for bits in [float(b) for b in a.bits.split(",")]:
        for pc in (False, True):
            name = f"val-b{bits:g}-{'channel' if pc else 'tensor'}"
            r = run_cached(a.bin, spec_for(bits, pc, a.validation), os.path.join(a.out, name), name)
            rows.append(("choice", bits, "per channel" if pc else "per tensor", r))
            print(f"{name}: validation {r['validation_accuracy']:.2f}% ({r.get('validation_samples')} images)",
                  flush=True)
    for bits in [float(b) for b in a.bits.split(",")]:
        name = f"test-b{bits:g}-unfolded"
        r = run_cached(a.baseline_bin, spec_for(bits), os.path.join(a.out, name), name)
        rows.append(("effect", bits, "unfolded (before)", r))
        print(f"{name}: test {r['test_accuracy']:.2f}%", flush=True)
        for pc in [v == "channel" for v in a.test_variants.split(",")]:
            name = f"test-b{bits:g}-folded-{'channel' if pc else 'tensor'}"
            r = run_cached(a.bin, spec_for(bits, pc), os.path.join(a.out, name), name)
            rows.append(("effect", bits, "folded, per channel" if pc else "folded, per tensor", r))
            print(f"{name}: test {r['test_accuracy']:.2f}%", flush=True)

    # 3. The same architecture on both sides (the uniform network at the budget's bits, fine-tuned
    #    only), so that the effect of folding is not mixed with a different search outcome.
    for bits in [int(float(b)) for b in a.bits.split(",") if float(b).is_integer()]:
        for label, binary in (("unfolded (before)", a.baseline_bin), ("folded, per tensor", a.bin)):
            spec = spec_for(bits)
            spec["method"] = "UNIFORM"
            spec["uniform_bits"] = bits
            name = f"uniform-b{bits}-{'unfolded' if binary == a.baseline_bin else 'folded-tensor'}"
            r = run_cached(binary, spec, os.path.join(a.out, name), name)
            rows.append(("uniform", bits, label, r))
            print(f"{name}: test {r['test_accuracy']:.2f}%", flush=True)

    def bits_of(r):
        ls = r.get("layers", [])
        w = sorted({l.get("weightBits", l.get("weight_bits")) for l in ls})
        x = sorted({l.get("activationBits", l.get("activation_bits")) for l in ls})
        return f"w{w} a{x}".replace(" ", "")

    lines = ["| split | budget (bits) | variant | bits | cost/budget | accuracy |", "|---|---|---|---|---|---|"]
    for kind, bits, variant, r in rows:
        acc = r["validation_accuracy"] if kind == "choice" else r["test_accuracy"]
        split = {"choice": "validation (10k held out)", "effect": "test, BP-NAS",
                 "uniform": "test, uniform network"}[kind]
        lines.append(f"| {split} | {bits:g} | {variant} | {bits_of(r)} | {r['cost'] / r['budget']:.3f} | {acc:.2f}% |")
    table = "\n".join(lines)
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
