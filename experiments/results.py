#!/usr/bin/env python3
"""The results experiment: does BP-NAS keep the budget and beat uniform quantization?

One command runs everything and writes a Markdown table, JSON results and PNG plots:

    python3 experiments/results.py --out out/results            # full run (see --help for sizes)
    python3 experiments/results.py --quick --out out/results-q  # minutes: a subset, for CI

A run whose result file exists and was made from the same spec is reused, so an interrupted
harness picks up where it stopped (delete the folder to start afresh).

Protocol (issue "Results"): one FP32-pretrained resnet20 is the shared starting point. For every
budget: (a) BP-NAS: one search from the pretrained weights, then the derived network is fine-tuned
from the pretrained weights; (b) uniform quantization at the highest uniform bitwidth that fits the
budget, fine-tuned from the pretrained weights with the same schedule; (c) a fixed-weight linear cost
penalty (cross-entropy + gamma * E[cost]/budget, no barrier; EdMIPS-style), gamma chosen once per
metric on one budget and reused, fine-tuned the same way. Search time is reported separately from
fine-tune time.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(ROOT, "out", "results"), help="output folder")
    p.add_argument("--bin", default=os.path.join(ROOT, "build", "bin", "bpnas"), help="the bpnas binary")
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist", help="Fashion-MNIST folder")
    p.add_argument("--width", type=float, default=0.5, help="resnet20 width multiplier")
    p.add_argument("--train-limit", type=int, default=0, help="training samples (0 = all 60000)")
    p.add_argument("--test-limit", type=int, default=0, help="test samples (0 = all 10000)")
    p.add_argument("--pretrain-epochs", type=int, default=3)
    p.add_argument("--warmup-epochs", type=int, default=1)
    p.add_argument("--search-epochs", type=int, default=1)
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--bitops-bits", default="2.5,3,4,5,6",
                   help="BitOPs budgets as uniform-equivalent bits (the cost of the uniform b-bit network)")
    p.add_argument("--size-bits", default="3,4", help="model-size budgets as uniform-equivalent bits")
    p.add_argument("--gammas", default="0.03,0.1,0.3", help="linear-penalty gammas tried on the calibration budget")
    p.add_argument("--calibrate-bits", type=float, default=4.0, help="budget (bits) on which gamma is chosen")
    p.add_argument("--seed", type=int, default=1, help="seed of every run (data order, initialisation)")
    p.add_argument("--methods", default="bpnas,uniform,linear", help="which methods to run")
    p.add_argument("--extra", default="{}", help="JSON merged into every spec's \"search\" (experiments)")
    p.add_argument("--quick", action="store_true", help="a few-minute version on a subset (CI)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--fresh", action="store_true", help="run everything again, ignoring finished runs in --out")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: write the table and plots from the runs already finished in --out")
    a = p.parse_args()
    if a.quick:
        a.width, a.train_limit, a.test_limit = 0.25, 2000, 1000
        a.pretrain_epochs, a.warmup_epochs, a.search_epochs, a.finetune_epochs = 1, 1, 1, 1
        a.bitops_bits, a.size_bits, a.gammas = "3,4", "3", "1"
        a.calibrate_bits = 4.0
    return a


def spec_digest(spec_path):
    with open(spec_path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def cached(spec_path, result_path, fresh):
    """A finished run's result, if it was made from exactly this spec (an interrupted harness resumes)."""
    if fresh:
        return None
    try:
        with open(result_path) as f:
            r = json.load(f)
    except (OSError, ValueError):
        return None
    return r if r.get("spec_sha256") == spec_digest(spec_path) else None


def save_result(spec_path, result_path, r):
    r["spec_sha256"] = spec_digest(spec_path)
    tmp = result_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(r, f, indent=2)
    os.replace(tmp, result_path)


def run(cmd, log):
    t0 = time.time()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True)
    secs = time.time() - t0
    if proc.returncode not in (0, 1):
        sys.exit(f"results: {' '.join(cmd)} failed with exit code {proc.returncode}; see {log}")
    return proc.stdout, secs


def main():
    a = parse_args()
    os.makedirs(a.out, exist_ok=True)
    base = {
        "model": {"name": "resnet20", "width_multiplier": a.width},
        "dataset": {"kind": "fashion-mnist", "path": a.data, "train_limit": a.train_limit,
                    "test_limit": a.test_limit},
        "search": dict({"warmup_epochs": a.warmup_epochs, "epochs": a.search_epochs, "batch_size": 128},
                       **json.loads(a.extra)),
        "finetune": {"epochs": a.finetune_epochs, "lr": 0.02},
        "seed": a.seed,
    }

    def write_spec(name, **patch):
        spec = json.loads(json.dumps(base))
        for k, v in patch.items():
            if isinstance(v, dict) and isinstance(spec.get(k), dict):
                spec[k].update(v)
            else:
                spec[k] = v
        path = os.path.join(a.out, name + ".json")
        with open(path, "w") as f:
            json.dump(spec, f, indent=2)
        return path

    # 1. The shared FP32 starting point.
    weights = os.path.join(a.out, "fp32.pt")
    spec = write_spec("pretrain")
    pre = cached(spec, os.path.join(a.out, "pretrain.result.json"), a.fresh)
    if pre is None or not os.path.exists(weights):
        if a.report_only:
            sys.exit(f"results: --report-only: no finished pretraining in {a.out}")
        out, secs = run([a.bin, "pretrain", "--spec", spec, "--out", weights, "--epochs", str(a.pretrain_epochs),
                         "--json"], os.path.join(a.out, "pretrain.log"))
        pre = json.loads(out)
        pre["seconds"] = secs
        save_result(spec, os.path.join(a.out, "pretrain.result.json"), pre)
    secs = pre["seconds"]
    print(f"pretrained FP32: {pre['fp32_test_accuracy']:.2f}% in {secs:.0f}s", flush=True)

    run_seconds = [pre["seconds"]]  # every run's wall time, reused ones included

    def search(name, method, metric, bits, gamma=None, uniform_bits=None, finetune=True, layer_bits=None):
        patch = {"method": method, "init_weights": weights,
                 "constraint": {"metric": metric, "max_relative_to_uniform_bits": bits},
                 "finetune": {"from_init": True, "epochs": a.finetune_epochs if finetune else 0}}
        if gamma is not None:
            patch["search"] = {"linear_gamma": gamma}
        if method == "BPNAS":
            # Spelled out, so that a run made before the engine had this parameter is not reused.
            patch["search"] = dict({"lower_band": 0.9, "budget_target": 0.95, "start_ratio": 0.95},
                                   **json.loads(a.extra))
        if uniform_bits is not None:
            patch["uniform_bits"] = uniform_bits
        if layer_bits is not None:
            patch["layer_bits"] = [{"weight_bits": w, "activation_bits": x} for w, x in layer_bits]
        spec = write_spec(name, **patch)
        trace = os.path.join(a.out, name + ".trace.jsonl")
        result_path = os.path.join(a.out, name + ".result.json")
        r = cached(spec, result_path, a.fresh)
        if r is not None:
            print(f"  {name}: reused {result_path}", flush=True)
        elif a.report_only:
            return None
        else:
            out, secs = run([a.bin, "search", "--spec", spec, "--out", os.path.join(a.out, name + ".bpq"), "--json",
                             "--trace", trace], os.path.join(a.out, name + ".log"))
            r = json.loads(out[out.index("{"):])
            r["wall_seconds"] = secs
            r["name"] = name
            r["phase_seconds"] = {p["phase"]: p["seconds"] for p in r.get("phase_times", [])}
            save_result(spec, result_path, r)
        secs = r["wall_seconds"]
        run_seconds.append(secs)
        print(f"  {name}: cost/budget {r['cost'] / r['budget']:.3f} within={r.get('within_budget', False)} "
              f"acc {r['test_accuracy']:.2f}% ({secs:.0f}s)", flush=True)
        return r

    def uniform_costs(metric):
        spec = write_spec("cost-" + metric, constraint={"metric": metric, "max_relative_to_uniform_bits": 4})
        out = subprocess.run([a.bin, "cost", "--spec", spec, "--json"], stdout=subprocess.PIPE, text=True).stdout
        report = json.loads(out)
        return {int(u["bits"]): u["cost"] for u in report["uniform"]}, report

    def floats(text):
        return [float(x) for x in text.split(",") if x.strip()]

    budgets = [("BITOPS", b) for b in floats(a.bitops_bits)] + [("SIZE", b) for b in floats(a.size_bits)]
    gammas = floats(a.gammas)

    # 2. Gamma for the linear penalty, once per metric, on the calibration budget: the gamma whose
    #    derived network uses the most of the budget without exceeding it (closest to it otherwise).
    methods = set(a.methods.split(","))
    chosen_gamma = {}
    calibration = []
    for metric in (sorted({m for m, _ in budgets}) if "linear" in methods else []):
        best = None
        for g in gammas:
            r = search(f"calib-{metric.lower()}-g{g}", "LINEAR_PENALTY", metric, a.calibrate_bits, gamma=g,
                       finetune=False)
            if r is None:
                continue
            ratio = r["cost"] / r["budget"]
            calibration.append({"metric": metric, "gamma": g, "ratio": ratio})
            key = (0, -ratio) if ratio <= 1 else (1, ratio)
            if best is None or key < best[0]:
                best = (key, g)
        if best is None:
            continue
        chosen_gamma[metric] = best[1]
        print(f"linear penalty gamma for {metric}: {best[1]}", flush=True)

    # 3. Every budget, three methods.
    rows = []
    for metric, bits in budgets:
        costs, report = uniform_costs(metric)
        budget = None
        r_a = search(f"{metric.lower()}-b{bits}-bpnas", "BPNAS", metric, bits)
        if r_a is None:
            continue  # --report-only: not run yet
        budget = r_a["budget"]
        if "uniform" not in methods:
            costs = {}
        fitting = [b for b, c in costs.items() if c <= budget * (1 + 1e-9)]
        r_b = None
        if fitting:
            ub = max(fitting)
            r_b = search(f"{metric.lower()}-b{bits}-uniform{ub}", "UNIFORM", metric, bits, uniform_bits=ub)
        r_c = None
        if "linear" in methods and metric in chosen_gamma:
            r_c = search(f"{metric.lower()}-b{bits}-linear", "LINEAR_PENALTY", metric, bits,
                         gamma=chosen_gamma[metric])
        # Where the check returned the uniform candidate: the derived network it rejected, fine-tuned
        # the same way, so the table shows what the search alone would have given.
        r_d = None
        if r_a.get("check_derived_layers"):
            r_d = search(f"{metric.lower()}-b{bits}-derived", "FIXED", metric, bits,
                         layer_bits=[(l["weight_bits"], l["activation_bits"]) for l in r_a["check_derived_layers"]])
        rows.append({"metric": metric, "bits": bits, "budget": budget, "bpnas": r_a, "uniform": r_b, "linear": r_c,
                     "derived": r_d,
                     "uniform_fits": bool(fitting) if "uniform" in methods else None})

    # 4. The ceiling: how much accuracy any bit allocation could recover at most (uniform 8-bit, same
    #    fine-tune, and the FP32 start itself). A method cannot beat uniform b-bit by more than this gap.
    ceiling = None
    if "uniform" in methods and not a.quick:
        ceiling = search("ceiling-uniform8", "UNIFORM", "BITOPS", 8, uniform_bits=8)

    summary = {"args": vars(a), "pretrain": pre, "gamma": chosen_gamma, "calibration": calibration,
               "rows": rows, "ceiling": ceiling, "total_seconds": sum(run_seconds),
               "complete": len(rows) == len(budgets)}
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    table = render_table(summary)
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write(table)
    print(table)
    if not a.no_plots:
        plot(summary, a.out)
    failures = [r["bpnas"]["name"] for r in rows if not r["bpnas"].get("within_budget", False)]
    if failures:
        print("results: BP-NAS over budget in " + ", ".join(failures), file=sys.stderr)
        return 1
    return 0


def render_table(s):
    lines = ["| metric | budget (uniform-bit equiv.) | method | bits | cost | cost/budget | within | test acc | search s | fine-tune s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in s["rows"]:
        for key, label in (("bpnas", "BP-NAS"), ("derived", "BP-NAS derived"), ("uniform", "uniform"),
                           ("linear", "linear penalty")):
            r = row.get(key)
            if r is None and key == "derived":
                continue  # only where the check returned the uniform candidate
            if r is None:
                why = "no uniform bitwidth fits" if key == "uniform" and row.get("uniform_fits") is False else "not run"
                lines.append(f"| {row['metric']} | {row['bits']:g} | {label} | {why} | | | | | | |")
                continue
            ps = r["phase_seconds"]
            search = ps.get("warmup", 0) + ps.get("search", 0) + ps.get("check", 0)  # the check is part of the search
            ft = ps.get("finetune", 0) + ps.get("train", 0)
            layers = r.get("layers", [])
            if key == "uniform":
                bits = f"{layers[0]['weight_bits']}/{layers[0]['activation_bits']} all" if layers else ""
            else:
                wb = sorted({l["weight_bits"] for l in layers})
                ab = sorted({l["activation_bits"] for l in layers})
                bits = "w{" + ",".join(map(str, wb)) + "} a{" + ",".join(map(str, ab)) + "}"
                if r.get("returned_uniform"):
                    bits += " (uniform candidate, returned by the check)"
                if key == "derived":
                    bits += " (rejected by the check; not returned)"
            lines.append(f"| {row['metric']} | {row['bits']:g} | {label} | {bits} | {r['cost']:.4g} | "
                         f"{r['cost'] / r['budget']:.3f} | {'yes' if r.get('within_budget') else 'NO'} | "
                         f"{r['test_accuracy']:.2f}% | {search:.0f} | {ft:.0f} |")
    lines.append("")
    lines.append(f"FP32 start (pretrained, shared by every run): {s['pretrain']['fp32_test_accuracy']:.2f}%")
    if s.get("ceiling"):
        lines.append(f"Ceiling, uniform 8-bit with the same fine-tune: {s['ceiling']['test_accuracy']:.2f}%")
    lines.append(f"Wall time of all runs (pretraining, calibration, every method): {s['total_seconds'] / 60:.1f} min")
    if not s.get("complete", True):
        lines.append("Incomplete: budgets without a finished BP-NAS run are not shown yet.")
    return "\n".join(lines) + "\n"


def plot(s, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("results: matplotlib not installed (Debian package python3-matplotlib); no plots", file=sys.stderr)
        return
    for metric in sorted({r["metric"] for r in s["rows"]}):
        fig, ax = plt.subplots(figsize=(6, 4))
        for key, label, marker in (("bpnas", "BP-NAS", "o"), ("uniform", "uniform", "s"),
                                   ("linear", "linear penalty", "^")):
            pts = [(r[key]["cost"], r[key]["test_accuracy"]) for r in s["rows"] if r["metric"] == metric and r.get(key)]
            if pts:
                pts.sort()
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=label)
        for r in s["rows"]:
            if r["metric"] == metric:
                ax.axvline(r["budget"], color="grey", lw=0.5, ls=":")
        ax.set_xlabel("exact cost (" + ("BitOPs" if metric == "BITOPS" else "bits") + ")")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"accuracy vs cost ({metric}); dotted: budgets")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out, f"accuracy_vs_cost_{metric.lower()}.png"), dpi=120)
        plt.close(fig)
    bitops = [r for r in s["rows"] if r["metric"] == "BITOPS"]
    picks = [bitops[0], bitops[len(bitops) // 2]] if len(bitops) > 1 else bitops
    if not picks:
        return
    fig, axes = plt.subplots(1, len(picks), figsize=(6 * len(picks), 4), squeeze=False)
    for ax, row in zip(axes[0], picks):
        for key, label in (("bpnas", "BP-NAS"), ("linear", "linear penalty")):
            if not row.get(key):
                continue
            trace = os.path.join(out, row[key]["name"] + ".trace.jsonl")
            pts = []
            with open(trace) as f:
                for i, line in enumerate(f):
                    ev = json.loads(line)
                    if ev["phase"] == "search":
                        pts.append(((ev["epoch"] - 1) * ev["steps"] + ev["step"], ev["expected_ratio"], ev["argmax_ratio"]))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=f"{label}: E[cost]/budget")
            ax.plot([p[0] for p in pts], [p[2] for p in pts], ls="--", label=f"{label}: argmax cost/budget")
        ax.axhline(1.0, color="red", lw=0.8)
        ax.set_xlabel("search step")
        ax.set_ylabel("cost / budget")
        ax.set_title(f"BitOPs budget = uniform {row['bits']:g}-bit")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "cost_over_search.png"), dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
