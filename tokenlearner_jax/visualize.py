"""Pictures of a run: what each learned token attends to, and the training / eval curves.

  python -m tokenlearner_jax.visualize attention --workdir=W [--config=C] [--num_images=4] [--output=DIR]
  python -m tokenlearner_jax.visualize curves --workdir=W [--output=DIR]

`attention` restores the latest checkpoint of W, runs the model on the first `num_images` images of
the eval split and draws, for every TokenLearner of the model, one row per image: the image, then the
spatial attention map of each learned token over it (a softmax over positions for v1.1, a sigmoid
per position for v1.0), upsampled from the patch grid and overlaid. Each map is drawn on its own colour
scale from 0 to its maximum, given in the panel's title as a multiple of the uniform weight
1/positions. Without --config the config is read from W/config.json, as the trainer wrote it, so
overrides given at training time need not be repeated. `curves` plots W/metrics.jsonl: training and
eval loss, and accuracy, against the step. PNGs go to DIR (default W/pictures).
"""

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
COMMANDS = ("attention", "curves")


def config_from_workdir(workdir: str) -> ml_collections.ConfigDict:
    """The config a run was trained with, from the config.json the trainer wrote into its workdir."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: pass --config=configs/X.py (with the run's overrides)")
    with open(path, encoding="utf-8") as f:
        return ml_collections.ConfigDict(json.load(f))


def display_images(images: np.ndarray, normalize: str) -> np.ndarray:
    """Undoes the dataset's normalisation: float32 [n, h, w, 3] as fed to the model -> [n, h, w, 3] in [0, 1]."""
    from tokenlearner_jax.data import preprocess

    offset = preprocess.normalize(np.zeros((1, 1, 3), np.uint8), normalize)  # normalize() is affine per channel
    scale = preprocess.normalize(np.ones((1, 1, 3), np.uint8), normalize) - offset
    return np.clip((images - offset) / scale / 255.0, 0.0, 1.0)


def attention_grid(positions: int, height: int, width: int) -> tuple[int, int]:
    """(rows, cols) of the patch grid behind `positions` attention weights for a height x width image."""
    rows = int(round(np.sqrt(positions * height / width)))
    if rows <= 0 or positions % rows:
        raise ValueError(f"{positions} attention positions do not form a grid for a {height}x{width} image")
    return rows, positions // rows


def attention_maps(config, workdir: str, num_images: int) -> dict:
    """Runs the latest checkpoint of `workdir` on the first `num_images` eval images.

    Returns dict(step=int, images=float32 [n, h, w, 3] in [0, 1], labels=int [n], predictions=int [n],
    maps={TokenLearner name: float32 [n, num_tokens, rows, cols]}); raises ValueError if the model
    has no TokenLearner."""
    import flax
    import jax

    from tokenlearner_jax import config_lib, data
    from tokenlearner_jax.train import checkpoint as checkpoint_lib
    from tokenlearner_jax.train import trainer

    config_lib.validate(config)
    info = trainer.resolve_dataset(config)
    setup = trainer.Setup(config, info, trainer.num_train_steps(config, info))
    checkpointer = checkpoint_lib.Checkpointer(os.path.abspath(os.path.join(workdir, "checkpoints")), keep=1,
                                               async_save=False)
    step = checkpointer.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}")
    state = checkpointer.restore_state(step, setup.abstract_state)
    checkpointer.close()
    batch = next(iter(data.eval_batches(config.dataset, global_batch_size=num_images)))
    with setup.context():
        forward = jax.jit(lambda v, x: setup.model.apply(v, x, train=False, mutable=["intermediates"]))
        logits, intermediates = forward({"params": state.params, **state.model_state}, batch["image"])
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(intermediates["intermediates"]), sep="/")
    found = {name.rsplit("/", 1)[0]: np.asarray(values[0]) for name, values in flat.items()
             if name.endswith("/token_attention")}
    if not found:
        raise ValueError(f"the model of {workdir} has no TokenLearner (config.model.token_learner.enabled=False?)")
    height, width = batch["image"].shape[1:3]
    maps = {}
    for name, attention in sorted(found.items()):  # [n, num_tokens, positions]
        rows, cols = attention_grid(attention.shape[-1], height, width)
        maps[name] = attention.reshape(attention.shape[:2] + (rows, cols))
    labels = np.asarray(batch["label"])
    return dict(step=step, images=display_images(np.asarray(batch["image"]), config.dataset.normalize),
                labels=labels if labels.ndim == 1 else labels.argmax(-1),
                predictions=np.asarray(logits).argmax(-1), maps=maps)


def plot_attention(images: np.ndarray, maps: np.ndarray, labels, predictions, title: str, path: str) -> None:
    """One row per image: the image, then each token's map [num_tokens, rows, cols] overlaid on it."""
    num_images, num_tokens = maps.shape[:2]
    height, width = images.shape[1:3]
    uniform = 1.0 / (maps.shape[2] * maps.shape[3])
    size = 1.6
    fig, axes = plt.subplots(num_images, num_tokens + 1, squeeze=False,
                             figsize=(size * (num_tokens + 1), size * num_images + 0.6))
    gray = images.mean(-1) if images.shape[-1] == 3 else images[..., 0]
    for i in range(num_images):
        axes[i, 0].imshow(images[i], interpolation="nearest")
        axes[i, 0].set_title(f"label {labels[i]}, pred {predictions[i]}", fontsize=8)
        for t in range(num_tokens):
            ax = axes[i, t + 1]
            ax.imshow(gray[i], cmap="gray", interpolation="nearest")
            ax.imshow(maps[i, t], cmap="inferno", alpha=0.65, vmin=0.0, vmax=float(maps[i, t].max()),
                      interpolation="bilinear", extent=(-0.5, width - 0.5, height - 0.5, -0.5))
            ax.set_title(f"token {t}: max {maps[i, t].max() / uniform:.1f}x", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(records: list[dict], title: str, path: str) -> None:
    """Loss (train and eval) and accuracy (train and eval) against the step, from metrics.jsonl records."""
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, kind in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        for split, style in (("train", "-"), ("eval", "o-")):
            points = [(r["step"], r[f"{split}/{kind}"]) for r in records if f"{split}/{kind}" in r]
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, style, label=f"{split}/{kind}", markersize=4)
        ax.set_xlabel("step")
        ax.set_ylabel(kind)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    evals = [r for r in records if "eval/accuracy" in r]
    if evals:
        acc_ax.set_title(f"final eval/accuracy {evals[-1]['eval/accuracy']:.4f} (step {evals[-1]['step']})",
                         fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def attention_pictures(result: dict, workdir: str, output: str) -> list[str]:
    """Writes one PNG per TokenLearner of `attention_maps`'s result (attention.png, or attention_<name>.png
    for several) and returns their paths."""
    os.makedirs(output, exist_ok=True)
    paths = []
    for name, maps in result["maps"].items():
        file = "attention.png" if len(result["maps"]) == 1 else f"attention_{name.replace('/', '_')}.png"
        path = os.path.join(output, file)
        title = (f"{os.path.basename(os.path.abspath(workdir))}: {name}, {maps.shape[1]} tokens, "
                 f"step {result['step']}")
        plot_attention(result["images"], maps, result["labels"], result["predictions"], title, path)
        paths.append(path)
    return paths


def curve_picture(workdir: str, output: str) -> str:
    from tokenlearner_jax.train import metrics_log

    os.makedirs(output, exist_ok=True)
    path = os.path.join(output, "curves.png")
    plot_curves(metrics_log.read_metrics(workdir), os.path.basename(os.path.abspath(workdir)), path)
    return path


def main(argv):
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(f"usage: python -m tokenlearner_jax.visualize {{{'|'.join(COMMANDS)}}} "
                             f"--workdir=W ...")
    output = FLAGS.output or os.path.join(FLAGS.workdir, "pictures")
    if argv[1] == "attention":
        config = FLAGS.config if FLAGS.config is not None else config_from_workdir(FLAGS.workdir)
        paths = attention_pictures(attention_maps(config, FLAGS.workdir, FLAGS.num_images), FLAGS.workdir, output)
    else:
        paths = [curve_picture(FLAGS.workdir, output)]
    for path in paths:
        print(path)
    sys.stdout.flush()


def define_flags():
    """Command-line flags, defined only when this module runs as a program (so that importing it
    beside other tools does not define the same flag names twice)."""
    config_flags.DEFINE_config_file("config", None, "configs/X.py[:arg]; default: the workdir's config.json.")
    flags.DEFINE_string("workdir", None, "A training workdir (checkpoints/, metrics.jsonl, config.json).")
    flags.DEFINE_integer("num_images", 4, "attention: images from the start of the eval split.")
    flags.DEFINE_string("output", "", "Directory for the PNGs (default: WORKDIR/pictures).")
    flags.mark_flags_as_required(["workdir"])


if __name__ == "__main__":
    define_flags()
    app.run(main)
