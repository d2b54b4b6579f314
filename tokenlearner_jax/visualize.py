"""Pictures of a run: what each learned token attends to, the training / eval curves, NesT's GradCAT
paths and class maps, and a GAN's samples.

  python -m tokenlearner_jax.visualize attention --workdir=W [--config=C] [--num_images=4] [--output=DIR]
  python -m tokenlearner_jax.visualize curves --workdir=W [--output=DIR]
  python -m tokenlearner_jax.visualize class_attention --workdir=W [--config=C] [--num_images=4] [--output=DIR]
  python -m tokenlearner_jax.visualize gradcat --workdir=W [--config=C] [--num_images=4] [--class=C] [--output=DIR]
  python -m tokenlearner_jax.visualize samples --workdir=W [--num_images=64] [--seed=0] [--output=DIR]

`attention` restores the latest checkpoint of W, runs the model on the first `num_images` images of
the eval split and draws, for every TokenLearner of the model, one row per image: the image, then the
spatial attention map of each learned token over it (a softmax over positions for v1.1, a sigmoid
per position for v1.0), upsampled from the patch grid and overlaid. Each map is drawn on its own colour
scale from 0 to its maximum, given in the panel's title as a multiple of the uniform weight
1/positions. Without --config the config is read from W/config.json, as the trainer wrote it, so
overrides given at training time need not be repeated. `curves` plots W/metrics.jsonl: training and
eval loss, and accuracy, against the step. `class_attention` draws class-activation maps (CAM) for
models with a linear head after global average pooling that sow their normalised last feature map
(NesT): for each image, the image and the map of the predicted class over it, `feature_map @
head/kernel + head/bias` at every position (its mean over positions is that class's logit), upsampled
from the top-level grid; titles give the true and predicted class. `gradcat` traces NesT's GradCAT path
(evaluate/gradcat.py) for the predicted class, or for class C with --class=C: per image, the image with the
path drawn as nested boxes labelled with each level's score, titled with the true, predicted and traced
class, and beside it the CAM of the traced class; it reads the model variables only (a training workdir or
the output of `tokenlearner_jax.convert`), so any NesT checkpoint works, on the first images of the
config's eval split. `samples` draws a grid of the EMA generator's images of a gan run (tasks/gan.py)
from latents of --seed. PNGs go to DIR (default W/pictures).
"""

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
COMMANDS = ("attention", "curves", "class_attention", "gradcat", "samples")


def config_from_workdir(workdir: str) -> ml_collections.ConfigDict:
    """The config a run was trained with, from the config.json the trainer wrote into its workdir."""
    from tokenlearner_jax import recipes

    return recipes.from_workdir(workdir)


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


def run_checkpoint(config, workdir: str, num_images: int) -> dict:
    """Runs the latest checkpoint of `workdir` on the first `num_images` eval images.

    Returns dict(step=int, images=float32 [n, h, w, 3] in [0, 1], labels=int [n], predictions=int [n],
    logits=[n, classes], params=the parameter tree, intermediates={'/'-joined name: first sown value})."""
    import flax
    import jax

    from tokenlearner_jax import data
    from tokenlearner_jax.train import checkpoint as checkpoint_lib
    from tokenlearner_jax.train import trainer

    trainer.validate(config)
    info = trainer.resolve_dataset(config)
    setup = trainer.Setup(config, info, trainer.num_train_steps(config, info))
    checkpointer = checkpoint_lib.Checkpointer(os.path.abspath(os.path.join(workdir, "checkpoints")), keep=1,
                                               async_save=False)
    step = checkpointer.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}")
    state = checkpointer.load(step, setup.abstract_state, with_data=False).state
    checkpointer.close()
    batch = next(iter(data.eval_batches(config.dataset, global_batch_size=num_images)))
    with setup.context():
        forward = jax.jit(lambda v, x: setup.task.model.apply(v, x, train=False, mutable=["intermediates"]))
        variables = setup.task.variables(state)
        logits, intermediates = forward(variables, batch["image"])
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(intermediates["intermediates"]), sep="/")
    labels = np.asarray(batch["label"])
    return dict(step=step, images=display_images(np.asarray(batch["image"]), config.dataset.normalize),
                labels=labels if labels.ndim == 1 else labels.argmax(-1), logits=np.asarray(logits),
                predictions=np.asarray(logits).argmax(-1), params=flax.core.meta.unbox(variables["params"]),
                intermediates={name: np.asarray(values[0]) for name, values in flat.items()})


def attention_maps(config, workdir: str, num_images: int) -> dict:
    """`run_checkpoint`'s result without logits, params and intermediates, plus maps={TokenLearner name:
    float32 [n, num_tokens, rows, cols]}; raises ValueError if the model has no TokenLearner."""
    result = run_checkpoint(config, workdir, num_images)
    found = {name.rsplit("/", 1)[0]: values for name, values in result.pop("intermediates").items()
             if name.endswith("/token_attention")}
    if not found:
        raise ValueError(f"the model of {workdir} has no TokenLearner (config.model.token_learner.enabled=False?)")
    del result["logits"], result["params"]
    height, width = result["images"].shape[1:3]
    maps = {}
    for name, attention in sorted(found.items()):  # [n, num_tokens, positions]
        rows, cols = attention_grid(attention.shape[-1], height, width)
        maps[name] = attention.reshape(attention.shape[:2] + (rows, cols))
    result["maps"] = maps
    return result


def class_activation_maps(config, workdir: str, num_images: int) -> dict:
    """`run_checkpoint`'s result plus cams=float32 [n, rows, cols]: each image's map of its predicted
    class, `feature_map @ head/kernel[:, c] + head/bias[c]` (module docstring).

    Raises ValueError if the model sows no 'feature_map' or has no 'head' Dense, or if its last grid is
    not laid over the image (learned tokens)."""
    result = run_checkpoint(config, workdir, num_images)
    feature_map = result["intermediates"].get("feature_map")
    head = result["params"].get("head")
    if feature_map is None or head is None or feature_map.ndim != 4:
        raise ValueError(f"the model of {workdir} ({config.model.name}) does not sow a 'feature_map' [n, h, w, c] "
                         f"before a linear 'head' (NesT does)")
    height, width = result["images"].shape[1:3]
    if feature_map.shape[1] * width != feature_map.shape[2] * height:
        raise ValueError(f"the last grid of the model of {workdir} is {feature_map.shape[1]}x{feature_map.shape[2]}, "
                         f"not a grid over the {height}x{width} image (learned tokens without the fuser?)")
    from tokenlearner_jax.evaluate import gradcat

    result["cams"] = gradcat.class_activation_maps(feature_map, head["kernel"], head["bias"], result["predictions"])
    return result


def gradcat_paths(config, workdir: str, num_images: int, target=None, objective: str = "logit",
                  child_scores: str = "parent") -> dict:
    """GradCAT on the first `num_images` eval images with the latest model variables of `workdir`.

    Returns dict(step, images=float32 [n, h, w, 3] in [0, 1], labels [n], predictions [n], paths=[Traversal]
    (of class `target`, or of each prediction), cams=float64 [n, rows, cols] (CAM of the traced class))."""
    import jax

    from tokenlearner_jax import data, models
    from tokenlearner_jax.evaluate import gradcat
    from tokenlearner_jax.train import trainer
    from tokenlearner_jax.weights import init_from

    trainer.validate(config)
    if config.task != "classification":
        raise ValueError(f"visualize gradcat: {workdir} is a {config.task!r} run; expected a NesT classifier")
    if target is not None and not 0 <= target < config.model.num_classes:
        raise ValueError(f"--class={target}: expected a class in [0, {config.model.num_classes})")
    model = models.build(config.model)
    variables, step = init_from.restore_variables(workdir)
    batch = next(iter(data.eval_batches(config.dataset, global_batch_size=num_images)))
    images = np.asarray(batch["image"])
    targets = None if target is None else np.full(len(images), target, np.int32)
    logits, paths = gradcat.gradcat(model, variables, images, targets, objective=objective, child_scores=child_scores)
    _, state = jax.jit(lambda v, x: model.apply(v, x, train=False, mutable=["intermediates"]))(variables, images)
    feature_map = np.asarray(state["intermediates"]["feature_map"][0])
    head = variables["params"]["head"]
    cams = gradcat.class_activation_maps(feature_map, head["kernel"], head["bias"], [p.target for p in paths])
    labels = np.asarray(batch["label"])
    return dict(step=step, images=display_images(images, config.dataset.normalize),
                labels=labels if labels.ndim == 1 else labels.argmax(-1), predictions=logits.argmax(-1),
                paths=paths, cams=cams)


def plot_gradcat(result: dict, title: str, path: str) -> None:
    """Two panels per image (up to two images a row): the image with its GradCAT path, then the CAM of the
    traced class overlaid (scaled from its minimum to its maximum)."""
    from tokenlearner_jax.evaluate import gradcat

    images, cams = result["images"], result["cams"]
    num_images = len(images)
    per_row = min(num_images, 2)
    rows = -(-num_images // per_row)
    height, width = images.shape[1:3]
    fig, axes = plt.subplots(rows, 2 * per_row, squeeze=False, figsize=(2.6 * 2 * per_row, 2.8 * rows + 0.4))
    for i, traversal in enumerate(result["paths"]):
        path_ax, cam_ax = axes[i // per_row, 2 * (i % per_row)], axes[i // per_row, 2 * (i % per_row) + 1]
        gradcat.draw_traversal(path_ax, images[i], traversal, f"true {result['labels'][i]}, pred "
                               f"{result['predictions'][i]}, traced {traversal.target}")
        cam_ax.imshow(images[i].mean(-1), cmap="gray", interpolation="nearest")
        cam = cams[i] - cams[i].min()
        cam_ax.imshow(cam / max(float(cam.max()), 1e-12), cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0,
                      interpolation="bilinear", extent=(-0.5, width - 0.5, height - 0.5, -0.5))
        cam_ax.set_title(f"CAM of class {traversal.target}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        if not ax.images:
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def gradcat_picture(result: dict, workdir: str, output: str) -> str:
    os.makedirs(output, exist_ok=True)
    path = os.path.join(output, "gradcat.png")
    levels = len(result["paths"][0].levels)
    title = (f"{os.path.basename(os.path.abspath(workdir))}, step {result['step']}: GradCAT paths over {levels} "
             f"levels (box labels: level, score) and class-activation maps")
    plot_gradcat(result, title, path)
    return path


def sample_grid(images: np.ndarray, columns: int) -> np.ndarray:
    """float `[n, h, w, 3]` -> one picture `[rows * (h + 1) - 1, columns * (w + 1) - 1, 3]` with the images
    in row-major order, separated by one-pixel white lines (missing cells stay white)."""
    n, h, w, c = images.shape
    rows = -(-n // columns)
    grid = np.ones((rows * (h + 1) - 1, columns * (w + 1) - 1, c), images.dtype)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        grid[r * (h + 1):r * (h + 1) + h, col * (w + 1):col * (w + 1) + w] = image
    return grid


def generator_samples(workdir: str, num_images: int, seed: int = 0, step=None) -> dict:
    """dict(step, images=float32 [n, h, w, 3] in [0, 1]): the EMA generator of the gan run in `workdir` (at
    the checkpoint of `step`, default the latest) on `num_images` latents drawn from N(0, I) with key `seed`."""
    import jax

    from tokenlearner_jax.tasks import gan

    generator, variables, step = gan.restore_generator(workdir, step)
    latents = jax.random.normal(jax.random.key(seed), (num_images, generator.latent_dim))
    images = jax.jit(lambda v, z: generator.apply(v, z, train=False))(variables, latents)
    return dict(step=step, images=np.clip((np.asarray(images, np.float32) + 1.0) / 2.0, 0.0, 1.0))


def samples_picture(result: dict, workdir: str, output: str, name: str = "samples.png") -> str:
    os.makedirs(output, exist_ok=True)
    path = os.path.join(output, name)
    images = result["images"]
    grid = sample_grid(images, int(np.ceil(np.sqrt(len(images)))))
    scale = max(1, 256 // grid.shape[0])  # small images are drawn large enough to see
    fig, ax = plt.subplots(figsize=(6, 6 * grid.shape[0] / grid.shape[1] + 0.4))
    ax.imshow(np.kron(grid, np.ones((scale, scale, 1))), interpolation="nearest")
    ax.set_title(f"{os.path.basename(os.path.abspath(workdir))}: EMA generator, step {result['step']}", fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_attention(images: np.ndarray, maps: np.ndarray, labels, predictions, title: str, path: str) -> None:
    """One row per image: the image, then each token's map [num_tokens, rows, cols] overlaid on it; `labels`
    None when the true classes are unknown (predict)."""
    num_images, num_tokens = maps.shape[:2]
    height, width = images.shape[1:3]
    uniform = 1.0 / (maps.shape[2] * maps.shape[3])
    size = 1.6
    fig, axes = plt.subplots(num_images, num_tokens + 1, squeeze=False,
                             figsize=(size * (num_tokens + 1), size * num_images + 0.6))
    gray = images.mean(-1) if images.shape[-1] == 3 else images[..., 0]
    for i in range(num_images):
        axes[i, 0].imshow(images[i], interpolation="nearest")
        truth = "" if labels is None else f"label {labels[i]}, "
        axes[i, 0].set_title(f"{truth}pred {predictions[i]}", fontsize=8)
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


def plot_class_attention(images: np.ndarray, cams: np.ndarray, labels, predictions, title: str, path: str,
                         class_names=None) -> None:
    """Two panels per image (up to four images a row): the image, then its class map [rows, cols] overlaid,
    scaled from its minimum to its maximum; `labels` None when the true classes are unknown (predict)."""
    num_images = len(images)
    per_row = min(num_images, 4)
    rows = -(-num_images // per_row)
    height, width = images.shape[1:3]
    name = (lambda c: class_names[c]) if class_names is not None else str
    fig, axes = plt.subplots(rows, 2 * per_row, squeeze=False, figsize=(2.0 * 2 * per_row, 2.1 * rows + 0.5))
    for i in range(num_images):
        image_ax, map_ax = axes[i // per_row, 2 * (i % per_row)], axes[i // per_row, 2 * (i % per_row) + 1]
        image_ax.imshow(images[i], interpolation="nearest")
        image_ax.set_title("input" if labels is None else f"true {name(labels[i])}", fontsize=8)
        map_ax.imshow(images[i].mean(-1), cmap="gray", interpolation="nearest")
        cam = cams[i] - cams[i].min()
        map_ax.imshow(cam / max(float(cam.max()), 1e-12), cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0,
                      interpolation="bilinear", extent=(-0.5, width - 0.5, height - 0.5, -0.5))
        wrong = "" if labels is None or predictions[i] == labels[i] else " (wrong)"
        map_ax.set_title(f"map of pred {name(predictions[i])}{wrong}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        if not ax.images:
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def class_attention_picture(result: dict, workdir: str, output: str) -> str:
    os.makedirs(output, exist_ok=True)
    path = os.path.join(output, "class_attention.png")
    title = (f"{os.path.basename(os.path.abspath(workdir))}: class-activation maps on the "
             f"{result['cams'].shape[1]}x{result['cams'].shape[2]} top-level grid, step {result['step']}")
    plot_class_attention(result["images"], result["cams"], result["labels"], result["predictions"], title, path)
    return path


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
    elif argv[1] == "class_attention":
        config = FLAGS.config if FLAGS.config is not None else config_from_workdir(FLAGS.workdir)
        result = class_activation_maps(config, FLAGS.workdir, FLAGS.num_images)
        paths = [class_attention_picture(result, FLAGS.workdir, output)]
    elif argv[1] == "gradcat":
        config = FLAGS.config if FLAGS.config is not None else config_from_workdir(FLAGS.workdir)
        result = gradcat_paths(config, FLAGS.workdir, FLAGS.num_images, target=FLAGS["class"].value)
        paths = [gradcat_picture(result, FLAGS.workdir, output)]
    elif argv[1] == "samples":
        count = FLAGS.num_images if FLAGS["num_images"].present else 64
        paths = [samples_picture(generator_samples(FLAGS.workdir, count, FLAGS.seed), FLAGS.workdir, output)]
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
    flags.DEFINE_integer("num_images", 4, "attention, class_attention, gradcat: images from the start of the eval "
                         "split; samples: generated images (default 64).")
    flags.DEFINE_integer("class", None, "gradcat: the class to trace (default: each image's predicted class).")
    flags.DEFINE_integer("seed", 0, "samples: key of the latents.")
    flags.DEFINE_string("output", "", "Directory for the PNGs (default: WORKDIR/pictures).")
    flags.mark_flags_as_required(["workdir"])


def run():
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
