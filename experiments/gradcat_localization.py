"""Weakly-supervised localisation on canvas digits: GradCAT against CAM and a centre-box baseline.

  python experiments/gradcat_localization.py [--workdir=runs/nest_canvas_digits]

Trains configs/nest_canvas_digits.py through main.py (a workdir holding the finished run is reused), then,
on the 1,440 test canvases (data/canvas_digits.py; the classifier never saw a box), traces the predicted
class of every image and scores each method's point and box against the digit's true box
(evaluate/localization.py): a point hits inside the box, a box hits at IoU >= 0.5.
- GradCAT (evaluate/gradcat.py), with its defaults and with every choice of objective, scoring of children
  and top-level features: the point is the centre of the leaf block of the path; the boxes are the path's
  blocks at each level.
- CAM: the highest pixel of the map upsampled to 64x64; the box of its largest region at >= 0.2 of its range.
- Centre: the canvas centre; a box of the training digits' mean box size centred on the canvas.
- Random point: the expected hit rate of a uniformly random point (mean box area / canvas area).
Writes experiments/results/gradcat_localization.md, gradcat_localization.png (scores and examples) and
gradcat_canvas_digits.png (the output of `python -m tokenlearner_jax.visualize gradcat`).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.patches as patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
CONFIG = "configs/nest_canvas_digits.py"

from tokenlearner_jax import data, models  # noqa: E402
from tokenlearner_jax.data import canvas_digits  # noqa: E402
from tokenlearner_jax.evaluate import gradcat, localization  # noqa: E402
from tokenlearner_jax.recipes import sweeps  # noqa: E402
from tokenlearner_jax.weights import init_from  # noqa: E402


def read_metrics(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def load_config():
    return sweeps.load_module(os.path.join(ROOT, CONFIG)).get_config()


def train(config, workdir: str) -> str:
    """Runs main.py unless `workdir` holds the finished run; returns what to say about the wall time."""
    evals = [r for r in read_metrics(workdir) if "eval/accuracy" in r]
    if evals and evals[-1]["step"] == config.num_train_steps:
        return "not measured here: an existing finished run was reused"
    start = time.time()
    subprocess.run([sys.executable, "main.py", f"--config={CONFIG}", f"--workdir={workdir}"], cwd=ROOT, check=True)
    return f"{(time.time() - start) / 60:.1f} min for the training command"


def trace_test_split(config, workdir: str, batch_size: int = 240):
    """Per test image: labels, predictions, the score maps of every (objective, top features), and the CAM
    of the predicted class."""
    import jax

    model = models.build(config.model)
    variables, step = init_from.restore_variables(workdir)
    variants = [(o, t) for o in gradcat.OBJECTIVES for t in gradcat.TOP_FEATURES]

    @jax.jit
    def run(images):
        out = {}
        for objective, top in variants:
            logits, _, features, grads = gradcat.level_features_and_gradients(model, variables, images, None,
                                                                              objective, top)
            out[objective, top] = gradcat.score_maps(features, grads)
        _, state = model.apply(variables, images, train=False, mutable=["intermediates"])
        return logits, out, state["intermediates"]["feature_map"][0]

    labels, logits, feature_maps, maps = [], [], [], {v: [] for v in variants}
    for batch in data.eval_batches(config.dataset, global_batch_size=batch_size):
        keep = np.asarray(batch["mask"]) > 0
        batch_logits, batch_maps, feature_map = jax.device_get(run(batch["image"]))
        labels.append(np.asarray(batch["label"])[keep])
        logits.append(batch_logits[keep])
        feature_maps.append(feature_map[keep])
        for v in variants:
            maps[v].append([m[keep] for m in batch_maps[v]])
    predictions = np.concatenate(logits).argmax(-1)
    head = variables["params"]["head"]
    cams = gradcat.class_activation_maps(np.concatenate(feature_maps), head["kernel"], head["bias"], predictions)
    maps = {v: [np.concatenate([batch[level] for batch in per_batch]) for level in range(len(per_batch[0]))]
            for v, per_batch in maps.items()}
    return dict(step=step, labels=np.concatenate(labels), predictions=predictions, maps=maps, cams=cams)


def evaluate(result, true_boxes, mean_box, size: int):
    """(main rows, variant rows, what the picture shows); a row is (method, prediction, scores)."""
    count = len(true_boxes)
    rows, variant_rows, shown = [], [], {}
    for (objective, top), maps in result["maps"].items():
        for child_scores in gradcat.CHILD_SCORES:
            paths = gradcat.traverse(maps, (size, size), result["predictions"], child_scores)
            boxes = np.stack([p.boxes for p in paths])  # [n, levels, 4], top level first
            leaf = localization.scores(true_boxes, points=localization.box_centres(boxes[:, -1]))
            per_level = {int(p): localization.scores(true_boxes, boxes=boxes[:, k])
                         for k, p in enumerate(paths[0].levels)}
            variant_rows.append(((objective, child_scores, top), leaf, per_level))
            if (objective, child_scores, top) == ("logit", "parent", "normalized"):  # the defaults
                name = "GradCAT (defaults)"
                rows.append((name, f"centre of the leaf block ({boxes[0, -1, 2] - boxes[0, -1, 0]} px)", leaf))
                for k in range(boxes.shape[1] - 1, -1, -1):
                    side = boxes[0, k, 2] - boxes[0, k, 0]
                    rows.append((name, f"level {paths[0].levels[k]} block ({side}x{side} px)",
                                 per_level[int(paths[0].levels[k])]))
                shown["gradcat"] = paths
    cam_points = localization.map_points(result["cams"], size, size)
    cam_boxes = localization.map_boxes(result["cams"], size, size)
    rows.append(("CAM", "highest pixel", localization.scores(true_boxes, points=cam_points)))
    rows.append(("CAM", "box at 0.2 of the range", localization.scores(true_boxes, boxes=cam_boxes)))
    centre = localization.centre_boxes(count, size, size, *mean_box)
    rows.append(("Centre", "canvas centre", localization.scores(true_boxes, points=localization.box_centres(centre))))
    rows.append(("Centre", f"mean-size box ({mean_box[0]:.1f}x{mean_box[1]:.1f} px)",
                 localization.scores(true_boxes, boxes=centre)))
    areas = (true_boxes[:, 2] - true_boxes[:, 0]) * (true_boxes[:, 3] - true_boxes[:, 1]) / (size * size)
    rows.append(("Random point", "expected: mean box area / canvas area", {"point_hit": float(areas.mean())}))
    shown.update(cam_points=cam_points, cam_boxes=cam_boxes, centre=centre)
    return rows, variant_rows, shown


def percent(scores, key):
    return f"{100 * scores[key]:.1f}%" if key in scores else ""


def table(rows) -> str:
    lines = ["| method | prediction | point in box | box IoU >= 0.5 | mean IoU |", "|---|---|---|---|---|"]
    lines += [f"| {m} | {w} | {percent(s, 'point_hit')} | {percent(s, 'box_hit')} | "
              f"{s['mean_iou']:.3f} |" if "mean_iou" in s else f"| {m} | {w} | {percent(s, 'point_hit')} | | |"
              for m, w, s in rows]
    return "\n".join(lines)


def variant_table(variant_rows) -> str:
    levels = sorted(variant_rows[0][2])
    lines = ["| objective | children scored by | top-level features | leaf centre in box | " +
             " | ".join(f"level {k} block IoU >= 0.5 / mean IoU" for k in levels) + " |",
             "|---|---|---|---|" + "---|" * len(levels)]
    for (objective, child_scores, top), leaf, per_level in variant_rows:
        lines.append(f"| {objective} | {child_scores} | {top} | {percent(leaf, 'point_hit')} | " +
                     " | ".join(f"{percent(per_level[k], 'box_hit')} / {per_level[k]['mean_iou']:.3f}" for k in levels)
                     + " |")
    return "\n".join(lines)


def picture(rows, variant_rows, shown, images, true_boxes, result, path: str, count: int = 8) -> None:
    points = [("GradCAT\n" + "\n".join(v), leaf["point_hit"]) for v, leaf, _ in variant_rows]
    points += [(f"{m}\n{w}", s["point_hit"]) for m, w, s in rows if "point_hit" in s and not m.startswith("GradCAT")]
    fig = plt.figure(figsize=(16, 7.8))
    bar_ax = fig.add_axes([0.05, 0.6, 0.92, 0.35])
    bar_ax.bar(range(len(points)), [100 * v for _, v in points], color="#377eb8")
    bar_ax.set_xticks(range(len(points)), [n for n, _ in points], fontsize=6.5)
    bar_ax.set_ylabel("point in the digit's box (%)")
    bar_ax.set_ylim(0, 100)
    for i, (_, v) in enumerate(points):
        bar_ax.text(i, 100 * v + 1, f"{100 * v:.1f}", ha="center", fontsize=8)
    for i in range(count):
        ax = fig.add_axes([0.02 + i * 0.122, 0.02, 0.115, 0.4])
        gradcat.draw_traversal(ax, images[i], shown["gradcat"][i], f"true {result['labels'][i]}, pred "
                               f"{result['predictions'][i]}")
        for box, color, style in ((true_boxes[i], "#00ff00", "-"), (shown["cam_boxes"][i], "#ffffff", "--")):
            ax.add_patch(patches.Rectangle((box[1] - 0.5, box[0] - 0.5), box[3] - box[1], box[2] - box[0], fill=False,
                                           edgecolor=color, linewidth=1.2, linestyle=style))
        ax.plot(shown["cam_points"][i][1] - 0.5, shown["cam_points"][i][0] - 0.5, "w+", markersize=8)
    fig.text(0.02, 0.45, "First test canvases: GradCAT path with the defaults (red, orange, yellow: levels 2, 1, 0 "
             "with their scores), true box (green), CAM box (white dashed) and CAM maximum (white +)", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "nest_canvas_digits"))
    parser.add_argument("--results", default=os.path.join(ROOT, "experiments", "results"))
    args = parser.parse_args()
    config = load_config()
    wall = train(config, args.workdir)
    size = config.dataset.image_size
    true_boxes = canvas_digits.scale_boxes(canvas_digits.boxes("test"), size)
    train_boxes = canvas_digits.scale_boxes(canvas_digits.boxes("train"), size)
    mean_box = (float((train_boxes[:, 2] - train_boxes[:, 0]).mean()), float((train_boxes[:, 3] - train_boxes[:, 1]).mean()))
    result = trace_test_split(config, args.workdir)
    rows, variant_rows, shown = evaluate(result, true_boxes, mean_box, size)
    accuracy = float((result["predictions"] == result["labels"]).mean())
    records = read_metrics(args.workdir)
    speed = sorted(r["train/steps_per_sec"] for r in records if "train/steps_per_sec" in r)
    load = os.getloadavg()
    text = (f"# GradCAT, CAM and a centre box on canvas digits\n\n"
            f"Command: `python experiments/gradcat_localization.py --workdir=W` (trains `{CONFIG}` with main.py "
            f"unless W holds the finished run). The classifier: NesT, 3 levels, "
            f"{int(records[0]['model/num_params']):,} parameters, {config.num_train_steps} steps of batch "
            f"{config.batch_size}, {100 * accuracy:.2f}% top-1 on the {len(true_boxes)} test canvases (step "
            f"{result['step']}). Every method traces the predicted class; the boxes are the digits' tight boxes on "
            f"the 64x64 canvas (mean training box {mean_box[0]:.1f} x {mean_box[1]:.1f} px).\n\n"
            + table(rows) +
            "\n\nGradCAT's variants (evaluate/gradcat.py; the defaults are logit, parent, normalized): the point is "
            "the centre of the leaf block, the boxes the path's blocks.\n\n" + variant_table(variant_rows) +
            f"\n\nTraining wall time: {wall}; median {speed[len(speed) // 2]:.2f} training steps/s on "
            f"{os.cpu_count()} CPU cores shared with other jobs (load average {load[0]:.1f} / {load[1]:.1f} / "
            f"{load[2]:.1f} when this file was written).\n\n"
            f"![scores and examples](gradcat_localization.png)\n\n"
            f"`python -m tokenlearner_jax.visualize gradcat --workdir=W --num_images=8`:\n\n"
            f"![visualize gradcat](gradcat_canvas_digits.png)\n")
    batch = next(iter(data.eval_batches(config.dataset, global_batch_size=8)))
    from tokenlearner_jax.visualize import display_images

    images = display_images(np.asarray(batch["image"]), config.dataset.normalize)
    picture(rows, variant_rows, shown, images, true_boxes, result,
            os.path.join(args.results, "gradcat_localization.png"))
    with open(os.path.join(args.results, "gradcat_localization.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    with tempfile.TemporaryDirectory() as output:
        subprocess.run([sys.executable, "-m", "tokenlearner_jax.visualize", "gradcat", f"--workdir={args.workdir}",
                        "--num_images=8", f"--output={output}"], cwd=ROOT, check=True)
        shutil.copy(os.path.join(output, "gradcat.png"), os.path.join(args.results, "gradcat_canvas_digits.png"))


if __name__ == "__main__":
    main()
