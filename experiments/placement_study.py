"""The TokenLearner placement study on digits: the sweep of configs/placement_study.py, then its table,
plot and the attention maps of the best TokenLearner placement.

  python experiments/placement_study.py [--workdir=runs/placement_study]

Runs `python -m tokenlearner_jax.sweep --config=configs/placement_study.py --workdir=WORKDIR` (finished
points are skipped, so a rerun only redoes the analysis), then writes
  experiments/results/placement_study.md             test top-1 per placement (every seed, and the mean)
                                                     against the XLA-counted MACs per image
  experiments/results/placement_study.png            top-1 against GMACs
  experiments/results/placement_study_attention.png  the learned tokens' attention maps of the best
                                                     TokenLearner point (highest mean top-1; its best seed)
"""

import argparse
import collections
import os
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tokenlearner_jax import visualize  # noqa: E402
from tokenlearner_jax.recipes import sweep_results, sweeps  # noqa: E402
from tokenlearner_jax.models import vit  # noqa: E402

CONFIG = "configs/placement_study.py"
RESULTS = os.path.join(ROOT, "experiments", "results")
LOCATION, TOKENS, ENABLED = ("model.token_learner.location", "model.token_learner.num_tokens",
                             "model.token_learner.enabled")


def placement(row: dict, depth: int) -> tuple:
    """(sort key, label, num_tokens or None) of a result row."""
    if row.get(ENABLED) is False:
        return (2.0, 0), "none (plain ViT)", None
    layer = int(round(row[LOCATION] * depth))
    return (row[LOCATION], row[TOKENS]), f"{row[LOCATION]:g} (before layer {layer} of {depth})", row[TOKENS]


def summarise(rows: list[dict], depth: int) -> list[dict]:
    """One entry per placement: label, tokens, GMACs, parameters, per-seed and mean top-1."""
    groups = collections.OrderedDict()
    for row in sorted(rows, key=lambda r: (placement(r, depth)[0], r["seed"])):
        key, label, tokens = placement(row, depth)
        group = groups.setdefault(key, dict(label=label, location=row.get(LOCATION), tokens=tokens, runs=[]))
        group["runs"].append(row)
    out = []
    for group in groups.values():
        runs = group.pop("runs")
        accuracies = [r["eval/accuracy"] for r in runs]
        out.append(dict(group, seeds=[r["seed"] for r in runs], accuracies=accuracies,
                        mean=float(np.mean(accuracies)), gmacs=runs[0]["model/gmacs"],
                        params=int(runs[0]["model/num_params"]),
                        workdirs=[r["point"] for r in runs], minutes=sum(r["seconds"] for r in runs) / 60))
    return out


def write_table(entries: list[dict], config, path: str, attention_png: str, best: dict, best_seed: int) -> None:
    baseline = next(e for e in entries if e["tokens"] is None)
    seeds = entries[0]["seeds"]
    model, opt = config.model, config.optimizer
    patch = model.patch_size if model.patch_size > 0 else vit.parse_variant(model.variant)[1]
    patches = (config.dataset.image_size // patch) ** 2
    size = config.dataset.image_size
    lines = [
        "# TokenLearner placement on digits",
        "",
        f"`python experiments/placement_study.py` (the sweep `python -m tokenlearner_jax.sweep "
        f"--config={CONFIG} --workdir=runs/placement_study`, then this table and the plot).",
        "",
        f"ViT width {model.width}, depth {model.depth}, {model.num_heads} heads, MLP {model.mlp_dim}, patch "
        f"{patch} at {size}x{size} ({patches} patch tokens), GAP head, TokenLearner v1.1; "
        f"{config.num_train_steps} steps of batch {config.batch_size} (AdamW, lr {opt.learning_rate:g}, "
        f"{opt.warmup_steps} warmup steps, cosine decay, weight decay {opt.weight_decay:g}, label smoothing "
        f"{config.label_smoothing:g}, random shifts of up to {config.dataset.shift_pixels} pixels), the same for "
        f"every point; seeds {', '.join(map(str, seeds))} (initialisation and data order). Test top-1 on the "
        f"360 digits test images after the last step; MACs per image as counted by XLA for the forward pass. Run "
        f"on {os.cpu_count()} shared CPU cores, one point at a time.",
        "",
        "| TokenLearner location | tokens | MMACs / image | MACs vs no TokenLearner | parameters | "
        + " | ".join(f"top-1 seed {s}" for s in seeds) + " | mean top-1 |",
        "|---|---|---|---|---|" + "---|" * len(seeds) + "---|",
    ]
    for e in entries:
        tokens = e["tokens"] or f"{patches} (patches)"
        accuracies = " | ".join(f"{100 * a:.2f}%" for a in e["accuracies"])
        lines.append(f"| {e['label']} | {tokens} | {1e3 * e['gmacs']:.2f} | {e['gmacs'] / baseline['gmacs']:.2f} | "
                     f"{e['params']:,} | {accuracies} | {100 * e['mean']:.2f}% |")
    total = sum(e["minutes"] for e in entries)
    lines += ["", f"{sum(len(e['seeds']) for e in entries)} runs, {total:.0f} min of wall time in all.", "",
              f"Best TokenLearner point by mean top-1: location {best['location']:g}, {best['tokens']} tokens "
              f"({100 * best['mean']:.2f}%). Attention maps of its seed-{best_seed} run on the first test images: "
              f"`{os.path.relpath(attention_png, os.path.dirname(path))}`.", ""]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def plot(entries: list[dict], path: str, steps: int) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {8: ("o", "tab:blue"), 16: ("s", "tab:orange"), None: ("*", "black")}
    for tokens, (marker, color) in styles.items():
        group = [e for e in entries if e["tokens"] == tokens]
        if not group:
            continue
        label = f"TokenLearner, {tokens} tokens" if tokens else "no TokenLearner"
        ax.plot([e["gmacs"] * 1e3 for e in group], [100 * e["mean"] for e in group], marker=marker,
                color=color, linestyle="-" if tokens else "none", markersize=9 if tokens is None else 6,
                label=label + " (mean)")
        for e in group:
            ax.scatter([e["gmacs"] * 1e3] * len(e["accuracies"]), [100 * a for a in e["accuracies"]],
                       marker=marker, facecolors="none", edgecolors=color, alpha=0.5, s=20)
            if tokens:
                ax.annotate(f"{e['location']:g}", (e["gmacs"] * 1e3, 100 * e["mean"]), fontsize=8, color=color,
                            textcoords="offset points", xytext=(4, -11 if tokens == 16 else 5))
    ax.set_xlabel("MMACs per image (XLA count)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"TokenLearner placement on digits, {steps} steps (labels: location as a fraction of the depth; "
                 f"hollow: single seeds)", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "placement_study"))
    args = parser.parse_args()
    subprocess.run([sys.executable, "-m", "tokenlearner_jax.sweep", f"--config={CONFIG}",
                    f"--workdir={args.workdir}"], cwd=ROOT, check=True)

    points = sweeps.load_sweep(os.path.join(ROOT, CONFIG))
    names = [sweeps.point_name(point, points) for point in points]
    rows = sweep_results.collect(args.workdir, points, names)
    config = sweeps.load_module(os.path.join(ROOT, CONFIG)).get_config()
    entries = summarise(rows, config.model.depth)

    best = max((e for e in entries if e["tokens"]), key=lambda e: e["mean"])
    best_index = int(np.argmax(best["accuracies"]))
    best_workdir = os.path.join(args.workdir, best["workdirs"][best_index])
    result = visualize.attention_maps(visualize.config_from_workdir(best_workdir), best_workdir, num_images=6)
    picture = visualize.attention_pictures(result, best_workdir, RESULTS)[0]
    attention_png = os.path.join(RESULTS, "placement_study_attention.png")
    os.replace(picture, attention_png)

    table = os.path.join(RESULTS, "placement_study.md")
    write_table(entries, config, table, attention_png, best, best["seeds"][best_index])
    plot(entries, os.path.join(RESULTS, "placement_study.png"), config.num_train_steps)
    with open(table, encoding="utf-8") as f:
        print(f.read())


if __name__ == "__main__":
    main()
