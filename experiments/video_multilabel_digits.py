"""TokenLearner against the same backbone without it, for X(2+1)D and ViViT, on the bundled multi-label
moving digits: test mAP, MACs per clip, and the learned tokens' attention over time.

  python experiments/video_multilabel_digits.py [--workdir=runs/video_multilabel] [--num-train-steps=N]
      [--with-attention] [--skip-training]

Trains configs/quickstart_video_multilabel.py as `python main.py --config=...` runs it (600 steps of
batch 32 unless --num-train-steps says otherwise, 8 frames of 64x64, 14 classes: the digits present and their directions of motion), one run
after the other: X(2+1)D-tiny with TokenLearner -> transformer -> TokenFuser in its last stage, and with
`--config.model.token_learner.enabled=False` (the plain X(2+1)D); the same for ViViT (`:vivit`, TokenLearner
before layer 1 of 4). --with-attention adds X(2+1)D with a transformer over every position of the last
stage instead (no TokenLearner). The only overrides besides are `--config.eval_every_steps=100` (mAP
curves; evaluation does not touch training) and `--config.num_train_steps=N` if given (the learning rate
schedule follows it). Reads each run's metrics.jsonl (test mAP over the 600 test
clips, the parameter count, XLA's GMACs), adds the dot + conv MACs of the traced forward pass
(`flops.matmul_macs`, plus `x2plus1d.channelwise_macs` for the channel-wise convolutions, which are
sums of shifted copies that matmul_macs does not see), the wall and CPU time of every command and the
machine's load average, then draws the learned tokens' attention maps over the frames of one test clip
for both TokenLearner runs, with the share of each token's attention that falls on the digits.

Writes experiments/results/video_multilabel_digits.md, video_multilabel_digits.png (mAP against MACs,
and mAP during training) and video_multilabel_digits_attention_{x2plus1d,vivit}.png.
"""

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
CONFIG = "configs/quickstart_video_multilabel.py"
RESULTS = os.path.join(ROOT, "experiments", "results")
NO_TL = {"model.token_learner.enabled": False}
# (label, key, config argument, overrides)
RUNS = (
    ("X(2+1)D-tiny + TokenLearner (8 tokens / frame, last stage)", "x2plus1d_tl", "x2plus1d", {}),
    ("X(2+1)D-tiny (no TokenLearner)", "x2plus1d", "x2plus1d", NO_TL),
    ("ViViT + TokenLearner (8 tokens / slice before layer 1)", "vivit_tl", "vivit", {}),
    ("ViViT (no TokenLearner)", "vivit", "vivit", NO_TL),
)
ATTENTION_RUN = ("X(2+1)D-tiny, attention over every position of the last stage", "x2plus1d_attention", "x2plus1d",
                 dict(NO_TL, **{"model.attention_stages": (-1,)}))
EVAL_EVERY = 100
NUM_CLIPS = 8  # test clips run for the attention figure; the first with three digits is drawn


def _flags(overrides: dict) -> list:
    return [f"--config.{key}={value}" for key, value in overrides.items()]


def _load_config(arg: str, overrides: dict):
    spec = importlib.util.spec_from_file_location("config", os.path.join(ROOT, CONFIG))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for name in parents:
            node = node[name]
        node[leaf] = value
    return config


def dot_conv_mmacs(arg: str, overrides: dict) -> float:
    """Dot-product and convolution MACs of one clip's forward pass, channel-wise convolutions included."""
    from tokenlearner_jax import models
    from tokenlearner_jax.models import flops, x2plus1d

    config = _load_config(arg, overrides)
    shape = (config.dataset.num_frames, config.dataset.image_size, config.dataset.image_size, 3)
    model = models.build(config.model)
    macs = flops.matmul_macs(model, shape)
    if config.model.name == "x2plus1d":
        macs += x2plus1d.channelwise_macs(model, shape)
    return macs / 1e6


def load_average() -> str:
    with open("/proc/loadavg", encoding="utf-8") as f:
        return ", ".join(f.read().split()[:3])


def common_overrides(num_train_steps) -> dict:
    """The overrides every run gets."""
    steps = {} if num_train_steps is None else {"num_train_steps": num_train_steps}
    return dict(eval_every_steps=EVAL_EVERY, **steps)


def train(runs, workdir: str, num_train_steps) -> dict:
    """Runs every command in turn; {key: (wall seconds, CPU seconds, load average before, after)}, also
    written to `workdir`/times.json after each run."""
    times = {}
    for _, key, arg, overrides in runs:
        run_dir = os.path.join(workdir, key)
        shutil.rmtree(run_dir, ignore_errors=True)
        command = [sys.executable, "main.py", f"--config={CONFIG}:{arg}", f"--workdir={run_dir}",
                   *_flags(common_overrides(num_train_steps)), *_flags(overrides)]
        load_before = load_average()
        with open(os.path.join(workdir, f"{key}.log"), "w", encoding="utf-8") as log:
            start = time.time()
            proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(proc.pid, 0)
        if status:
            raise SystemExit(f"{key} failed (status {status}); see {workdir}/{key}.log")
        times[key] = (time.time() - start, usage.ru_utime + usage.ru_stime, load_before, load_average())
        print(f"{key}: {times[key]}", flush=True)
        with open(os.path.join(workdir, "times.json"), "w", encoding="utf-8") as f:
            json.dump(times, f)
    return times


def read_metrics(run_dir: str) -> tuple[dict, list[dict]]:
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    model = next(r for r in records if "model/gmacs" in r)
    return model, [r for r in records if "eval/mAP" in r]


def digit_cells(clip: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """bool `[frames, rows, cols]`: the cells of a rows x cols grid over each frame that hold digit pixels
    (any channel above half brightness in the [0, 1] display image)."""
    frames, height, width, _ = clip.shape
    cells = clip.max(-1).reshape(frames, rows, height // rows, cols, width // cols)
    return cells.max(axis=(2, 4)) > 0.5


def attention_figure(workdir: str, key: str, title: str, path: str) -> dict:
    """Draws the first TokenLearner's maps of run `key` over the frames of one test clip (rows: the frames,
    then one row per token; columns: time) and returns what the table quotes."""
    from tokenlearner_jax import data
    from tokenlearner_jax import visualize

    run_dir = os.path.join(workdir, key)
    config = visualize.config_from_workdir(run_dir)
    result = visualize.run_checkpoint(config, run_dir, NUM_CLIPS)
    labels = next(iter(data.eval_batches(config.dataset, global_batch_size=NUM_CLIPS)))["label"]
    names = data.registry.get_source(config.dataset).classes
    clip_index = next((i for i, label in enumerate(labels) if label[:10].sum() == 3), 0)
    name, attention = sorted((n, a) for n, a in result["intermediates"].items() if n.endswith("token_attention"))[0]
    frames = result["images"][clip_index]  # [T, H, W, 3] in [0, 1]
    groups = attention.shape[0] // NUM_CLIPS  # frames (X(2+1)D) or temporal slices (ViViT) per clip
    maps = attention.reshape(NUM_CLIPS, groups, *attention.shape[1:])[clip_index]  # [groups, tokens, positions]
    side = int(round(np.sqrt(maps.shape[-1])))
    maps = maps.reshape(groups, -1, side, side)
    shown = frames[:: len(frames) // groups]  # the first frame of each group
    scale = frames.shape[1] // side
    num_tokens = maps.shape[1]

    # Share of each token's attention on cells holding digit pixels, against those cells' share of the frame.
    cells = digit_cells(shown, side, side)
    weights = maps / maps.sum(axis=(2, 3), keepdims=True)  # v1.0's sigmoid maps do not sum to 1
    on_digits = (weights * cells[:, None]).sum(axis=(2, 3)).mean(axis=0)  # [tokens]
    area = cells.mean()

    fig, axes = plt.subplots(num_tokens + 1, groups, figsize=(1.3 * groups, 1.3 * (num_tokens + 1)), squeeze=False)
    for t in range(groups):
        axes[0, t].imshow(shown[t])
        axes[0, t].set_title(f"frame {t * (len(frames) // groups)}", fontsize=7)
        for k in range(num_tokens):
            up = np.kron(maps[t, k], np.ones((scale, scale)))
            axes[k + 1, t].imshow(shown[t] * 0.5)
            axes[k + 1, t].imshow(up, cmap="inferno", alpha=0.7, vmin=0, vmax=maps[:, k].max())
            if t == 0:
                axes[k + 1, t].set_ylabel(f"token {k}\n{100 * on_digits[k]:.0f}% on digits", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    present = ", ".join(names[c] for c in np.flatnonzero(labels[clip_index]))
    fig.suptitle(f"{title}\n{name.rsplit('/', 1)[0]}, test clip {clip_index} ({present}), step {result['step']}",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return dict(layer=name.rsplit("/", 1)[0], clip=clip_index, present=present, grid=side, groups=groups,
                on_digits=on_digits, area=area)


def plot(rows: list[dict], steps: int, path: str) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for row in rows:
        marker = "o" if row["key"].endswith("_tl") else "s"
        left.scatter(row["mmacs"], 100 * row["map"], marker=marker, s=50, label=row["label"])
        right.plot([r["step"] for r in row["curve"]], [100 * r["eval/mAP"] for r in row["curve"]], marker=marker,
                   label=row["label"])
    left.set_xlabel("MMACs per clip (dot + conv)")
    left.set_ylabel("test mAP (%)")
    left.set_title(f"mAP against compute ({steps} steps)")
    right.set_xlabel("training step")
    right.set_ylabel("test mAP (%)")
    right.set_title("test mAP during training")
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "video_multilabel"))
    parser.add_argument("--num-train-steps", type=int, default=None,
                        help="training steps of every run (default: the config's, 600)")
    parser.add_argument("--with-attention", action="store_true", help="also X(2+1)D with attention everywhere")
    parser.add_argument("--skip-training", action="store_true", help="tables and figures from existing runs")
    args = parser.parse_args()
    runs = RUNS + ((ATTENTION_RUN,) if args.with_attention else ())
    os.makedirs(args.workdir, exist_ok=True)
    if args.skip_training:
        with open(os.path.join(args.workdir, "times.json"), encoding="utf-8") as f:
            times = json.load(f)
    else:
        times = train(runs, args.workdir, args.num_train_steps)

    rows = []
    for label, key, arg, overrides in runs:
        model, evals = read_metrics(os.path.join(args.workdir, key))
        rows.append(dict(label=label, key=key, arg=arg, overrides=overrides, map=evals[-1]["eval/mAP"], curve=evals,
                         params=model["model/num_params"], xla_mmacs=1e3 * model["model/gmacs"],
                         mmacs=dot_conv_mmacs(arg, overrides), steps=evals[-1]["step"],
                         num_examples=int(evals[-1]["eval/num_examples"]), times=times[key]))
    png = os.path.join(RESULTS, "video_multilabel_digits.png")
    if len({row["steps"] for row in rows}) != 1:
        raise SystemExit(f"runs ended at different steps: { {row['key']: row['steps'] for row in rows} }")
    plot(rows, rows[0]["steps"], png)
    figures = {}
    for backbone, key in (("x2plus1d", "x2plus1d_tl"), ("vivit", "vivit_tl")):
        label = next(r["label"] for r in rows if r["key"] == key)
        path = os.path.join(RESULTS, f"video_multilabel_digits_attention_{backbone}.png")
        figures[backbone] = (path, attention_figure(args.workdir, key, label, path))

    table = ["| model | command | test mAP | params | MMACs / clip (dot + conv) | MMACs / clip (XLA, all ops) "
             "| wall time | CPU time | load average before -> after (1, 5, 15 min) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        wall, cpu, before, after = row["times"]
        command = " ".join([f"`:{row['arg']}`"] + [f"`{flag}`" for flag in _flags(row["overrides"])])
        table.append(f"| {row['label']} | {command} | {100 * row['map']:.2f}% | "
                     f"{row['params'] / 1e3:.0f}k | {row['mmacs']:.2f} | {row['xla_mmacs']:.2f} | {wall / 60:.1f} min | "
                     f"{cpu / 60:.1f} min | {before} -> {after} |")
    curves = [f"- {row['label']}: " + ", ".join(f"{r['step']}: {100 * r['eval/mAP']:.2f}%" for r in row["curve"])
              for row in rows]
    attention_lines = []
    for backbone, (path, info) in figures.items():
        shares = ", ".join(f"{100 * s:.0f}%" for s in info["on_digits"])
        attention_lines.append(
            f"- {backbone}: [{os.path.basename(path)}]({os.path.basename(path)}): `{info['layer']}`, "
            f"test clip {info['clip']} (classes {info['present']}), {info['groups']} time steps, "
            f"{info['grid']}x{info['grid']} maps. Share of each token's attention on the cells holding digit "
            f"pixels, averaged over time: {shares}; those cells are {100 * info['area']:.0f}% of the frame.")
    cores = os.cpu_count()
    script_flags = (f" --num-train-steps={args.num_train_steps}" if args.num_train_steps else "") + (
        " --with-attention" if args.with_attention else "")
    protocol = "" if args.num_train_steps is None else (
        f" Reduced protocol: {args.num_train_steps} training steps instead of the config's 600 (the cosine "
        f"schedule ends at step {args.num_train_steps}), to fit the time this machine had; the config's own "
        f"600-step runs were not made here.")
    text = (
        "# TokenLearner in X(2+1)D and ViViT on the multi-label moving digits\n\n"
        f"Command: `python experiments/video_multilabel_digits.py{script_flags}`, which runs `python main.py "
        f"--config={CONFIG}[:vivit] --workdir=W {' '.join(_flags(common_overrides(args.num_train_steps)))} "
        f"[overrides]` for each row, one after the other.{protocol}\n\n"
        + "\n".join(table) +
        f"\n\nTest mAP over the {rows[0]['num_examples']} test clips (14 classes: the digits present and their "
        f"directions of motion; each clip evaluated once, 8 frames at stride 2), after {rows[0]['steps']} steps of "
        f"batch 32, one seed each. MMACs per clip of 8 x 64 x 64: 'dot + conv' counts the multiply-accumulates "
        f"of the convolutions (the channel-wise ones included), Dense layers and attention products, as papers "
        f"report; XLA's count adds the element-wise work. Machine: {cores} CPU cores shared with other jobs "
        f"(the load averages above: {cores} is a fully used machine), so wall times say little; CPU time is "
        f"that of the whole command (start-up, compilation, training, evaluations, checkpoints).\n\n"
        "Test mAP during training (step: mAP):\n\n" + "\n".join(curves) +
        "\n\n![mAP](video_multilabel_digits.png)\n\n"
        "## The learned tokens over time\n\n"
        "Each figure shows one test clip (the first of the test split with three digits): the frames (top row) "
        "and, below, each learned token's attention map over them, upsampled from the grid TokenLearner sees "
        "and drawn on the token's own colour scale over the clip.\n\n" + "\n".join(attention_lines) + "\n")
    with open(os.path.join(RESULTS, "video_multilabel_digits.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
