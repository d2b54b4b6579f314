"""NesT against a ViT of similar size on digits at several step budgets, same recipe and data order.

  python experiments/nest_data_efficiency.py [--workdir=runs/nest_data_efficiency] [--budgets=50,100,200]

The models are configs/nest_digits.py (NesT: widths 32, 64, 96, 16x16 grid of 2x2 patches) and
configs/nest_digits.py:vit (the quickstart's ViT without TokenLearner: width 64, 6 layers, 8x8 grid of
4x4 patches), each trained from scratch through main.py for every budget: num_train_steps = budget,
warmup = budget / 10, cosine decay to 0 at the budget, everything else the config's (AdamW lr 2e-3,
batch 128, label smoothing 0.1, seed 0). The longest budget's runs also evaluate every budget / 8 steps
(the curves in the plot; the other points are complete schedules). A rerun skips the runs whose
workdir holds the finished run. Writes
experiments/results/nest_data_efficiency.md and .png.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402

from tokenlearner_jax import models  # noqa: E402
from tokenlearner_jax.models import flops  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = (("NesT", "configs/nest_digits.py"), ("ViT", "configs/nest_digits.py:vit"))


def finished(workdir, budget, wall=None):
    """The result of a run whose last evaluation is at `budget` steps, or None."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    evals = [(r["step"], r["eval/accuracy"]) for r in records if "eval/accuracy" in r]
    if not evals or evals[-1][0] != budget:
        return None
    return dict(accuracy=evals[-1][1], curve=evals, wall=wall, gmacs=records[0]["model/gmacs"])


def run(workdir, config, budget, eval_every):
    """Trains unless `workdir` holds the finished run already (a rerun skips finished runs)."""
    result = finished(workdir, budget)
    if result is not None:
        return result
    shutil.rmtree(workdir, ignore_errors=True)
    command = [sys.executable, "main.py", f"--config={config}", f"--workdir={workdir}",
               f"--config.num_train_steps={budget}", f"--config.optimizer.warmup_steps={budget // 10}",
               f"--config.eval_every_steps={eval_every}", f"--config.checkpoint_every_steps={budget}"]
    start = time.time()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = finished(workdir, budget, wall=time.time() - start)
    with open(os.path.join(workdir, "wall.json"), "w", encoding="utf-8") as f:
        json.dump(result["wall"], f)
    return result


def model_size(workdir):
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
        config = ml_collections.ConfigDict(json.load(f))
    model = models.build(config.model)
    shape = (config.dataset.image_size,) * 2 + (3,)
    abstract = flops.abstract_variables(model, shape)
    return flops.count_params(abstract["params"]), flops.matmul_macs(model, shape, abstract)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "nest_data_efficiency"))
    parser.add_argument("--budgets", default="50,100,200")
    parser.add_argument("--output", default=os.path.join(ROOT, "experiments", "results", "nest_data_efficiency"))
    args = parser.parse_args()
    budgets = sorted(int(b) for b in args.budgets.split(","))
    results = {}
    for budget in budgets:  # both models at one budget before the next: a stopped run leaves pairs
        for name, config in MODELS:
            eval_every = budget // 8 if budget == budgets[-1] else 0
            workdir = os.path.join(args.workdir, f"{name.lower()}_{budget}")
            results[name, budget] = run(workdir, config, budget, eval_every)
            if results[name, budget]["wall"] is None and os.path.exists(os.path.join(workdir, "wall.json")):
                with open(os.path.join(workdir, "wall.json"), encoding="utf-8") as f:
                    results[name, budget]["wall"] = json.load(f)
            results[name] = model_size(workdir)
            print(name, budget, results[name, budget]["accuracy"], results[name, budget]["wall"], flush=True)

    header = "| model | params | MMACs (dot + conv) | MMACs (XLA) | " + " | ".join(
        f"{b} steps" for b in budgets) + " |"
    lines = [header, "|---" * (4 + len(budgets)) + "|"]
    for name, config in MODELS:
        params, macs = results[name]
        row = " | ".join(f"{100 * results[name, b]['accuracy']:.2f}%" for b in budgets)
        lines.append(f"| {name} (`{config}`) | {params / 1e3:.0f}k | {macs / 1e6:.1f} | "
                     f"{results[name, budgets[0]]['gmacs'] * 1e3:.1f} | {row} |")
    walls = [r["wall"] for k, r in results.items() if isinstance(k, tuple) and r["wall"] is not None]
    curve_lines = ["| step | " + " | ".join(name for name, _ in MODELS) + " |", "|---" * (1 + len(MODELS)) + "|"]
    curves = {name: dict(results[name, budgets[-1]]["curve"]) for name, _ in MODELS}
    for step in sorted(curves[MODELS[0][0]]):
        curve_lines.append(f"| {step} | " + " | ".join(f"{100 * curves[n].get(step, float('nan')):.2f}%"
                                                        for n, _ in MODELS) + " |")
    text = (f"# NesT against ViT on digits at several step budgets\n\n"
            f"Command: `python experiments/nest_data_efficiency.py --budgets={','.join(map(str, budgets))}` "
            f"({os.cpu_count()} CPU cores shared with other jobs; {sum(walls) / 60:.1f} min of wall time for "
            f"{len(walls)} of the {2 * len(budgets)} runs, start-up and compilation included; the others were "
            f"reused from an interrupted invocation)\n\n"
            f"Each cell: test top-1 on the 360 digits test images after a complete run of that many steps of "
            f"batch 128 (warmup = steps / 10, cosine to 0), one seed (one image = 0.28%). Same recipe and data "
            f"order for both models.\n\n" + "\n".join(lines) +
            f"\n\nDuring the {budgets[-1]}-step runs (evaluated every {budgets[-1] // 8} steps; the learning "
            f"rate is still decaying, so these are not complete schedules):\n\n" + "\n".join(curve_lines) + "\n")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output + ".md", "w", encoding="utf-8") as f:
        f.write(text)

    fig, ax = plt.subplots(figsize=(6, 4))
    for (name, _), color in zip(MODELS, ("tab:red", "tab:blue")):
        params, macs = results[name]
        ax.plot(budgets, [100 * results[name, b]["accuracy"] for b in budgets], "o-", color=color,
                label=f"{name} ({params / 1e3:.0f}k params, {macs / 1e6:.1f}M MACs): complete runs")
        steps, accs = zip(*sorted(curves[name].items()))
        ax.plot(steps, [100 * a for a in accs], ":", color=color, alpha=0.7,
                label=f"{name}: during the {budgets[-1]}-step run")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(budgets)
    ax.set_xticklabels([str(b) for b in budgets])
    ax.set_xlabel("training steps (batch 128)")
    ax.set_ylabel("digits test top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("NesT vs ViT on digits: accuracy against training steps", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.output + ".png", dpi=110)
    print(text)


if __name__ == "__main__":
    main()
