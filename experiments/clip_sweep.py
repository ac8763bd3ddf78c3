#!/usr/bin/env python3
"""Where the engine's per-bitwidth Scale-Clip constants come from (docs/results.md, "Scale-Clip").

One FP32 start (resnet20 width 0.5, the first 20k Fashion-MNIST training images, 3 epochs), then for
each bitwidth b and candidate (k_w, k_a): uniform b-bit, fine-tuned 1 epoch from that start with
search.clip_weight_k = k_w and search.clip_activation_k = k_a (one k for every layer), evaluated on
the full test set. Prints a Markdown table; about 10 minutes on 2 cores.

    python3 experiments/clip_sweep.py --out out/clip-sweep
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (bits, k_w, k_a): the old single constants (2.5, 4) at every bitwidth, and the neighbours of the
# chosen table entries.
CANDIDATES = [
    (2, 2.5, 4), (2, 1.5, 3), (2, 1.2, 3), (2, 1.2, 4), (2, 1.2, 6), (2, 0.9, 4),
    (3, 2.5, 4), (3, 2.0, 3), (3, 3.0, 5), (3, 4.0, 6), (3, 3.0, 8), (3, 4.0, 8),
    (4, 2.5, 4), (4, 3.0, 6), (4, 4.0, 8), (4, 5.0, 10),
    (8, 2.5, 4), (8, 4.0, 10), (8, 6.0, 16),
]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(ROOT, "out", "clip-sweep"))
    p.add_argument("--bin", default=os.path.join(ROOT, "build", "bin", "bpnas"))
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--train-limit", type=int, default=20000)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    base = {"model": {"name": "resnet20", "width_multiplier": 0.5},
            "dataset": {"kind": "fashion-mnist", "path": a.data, "train_limit": a.train_limit},
            "search": {"batch_size": 128}, "finetune": {"epochs": 1, "lr": 0.02}, "seed": 1}

    def write(name, spec):
        path = os.path.join(a.out, name + ".json")
        with open(path, "w") as f:
            json.dump(spec, f, indent=2)
        return path

    weights = os.path.join(a.out, "fp32.pt")
    out = subprocess.run([a.bin, "pretrain", "--spec", write("pretrain", base), "--out", weights, "--epochs", "3",
                          "--json"], stdout=subprocess.PIPE, text=True, check=True).stdout
    fp32 = json.loads(out)["fp32_test_accuracy"]
    rows = []
    for bits, kw, ka in CANDIDATES:
        spec = json.loads(json.dumps(base))
        spec.update({"method": "UNIFORM", "uniform_bits": bits, "init_weights": weights,
                     "constraint": {"metric": "BITOPS", "max_relative_to_uniform_bits": bits}})
        spec["search"].update({"clip_weight_k": kw, "clip_activation_k": ka})
        spec["finetune"]["from_init"] = True
        name = f"u{bits}-kw{kw}-ka{ka}"
        t0 = time.time()
        proc = subprocess.run([a.bin, "search", "--spec", write(name, spec), "--out", os.path.join(a.out, name + ".bpq"),
                               "--json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if proc.returncode != 0:
            sys.exit(f"clip_sweep: {name} failed with exit code {proc.returncode}")
        acc = json.loads(proc.stdout[proc.stdout.index("{"):])["test_accuracy"]
        rows.append((bits, kw, ka, acc))
        print(f"{name}: {acc:.2f}% ({time.time() - t0:.0f}s)", flush=True)
    lines = [f"FP32 start: {fp32:.2f}%", "", "| bits | k_w | k_a | test acc |", "|---|---|---|---|"]
    lines += [f"| {b} | {kw:g} | {ka:g} | {acc:.2f}% |" for b, kw, ka, acc in rows]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
