"""Classifies your own image or video files with a checkpoint of ours (a training workdir or the output
of `tokenlearner_jax.convert`).

  python -m tokenlearner_jax.predict --workdir=W [--config=C] [--top_k=5] [--format=table|jsonl]
      [--batch_size=32] [--attention_dir=DIR] INPUT [INPUT ...]

An INPUT is an image file, a video file, or a folder (every image, or for a video model every video,
under it, sorted). Each input goes through exactly the evaluation preprocessing of the run's dataset
config (data/preprocess.py `Preprocessor.eval`: resize, or resize and central crop for natural images;
data/video.py `VideoPreprocessor.eval` for videos: the centred clip, several views averaged when the
config asks for them), then the model of the latest checkpoint runs on batches of `batch_size` on the
default JAX device. For each input the top-k classes are printed with their names (the dataset's: TFDS
metadata, the class folders of an image or video folder, the digit for digits, '<digit>_<direction>'
for the moving digits) and probabilities (softmax, or per-class sigmoid for a multi-label run), as a
table or as JSON lines. The config is W/config.json unless --config is given; when the run's dataset
is not present on this machine the class ids stand in for names.

--attention_dir=DIR writes one PNG per input: the spatial attention of every learned token of each
TokenLearner (intermediates 'token_attention'; one row per temporal slice of a video), or for a model
with a linear head after global average pooling that sows its last feature map (NesT) the class-
activation map of the predicted class (`feature_map @ head/kernel + head/bias`); drawn by
visualize.py's plot_attention / plot_class_attention.
"""

import json
import os
import sys

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_KEPT_INTERMEDIATES = ("token_attention", "feature_map")  # what --attention_dir draws


class InputError(ValueError):
    """A user input (file, folder, workdir) that cannot be used; the message names it."""


def list_inputs(paths, extensions) -> list:
    """Files given, and every file with one of `extensions` under each folder given (sorted)."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(os.path.join(root, name) for root, _, names in os.walk(path) for name in names
                           if name.lower().endswith(extensions))
            if not found:
                raise InputError(f"{path}: no {'/'.join(extensions)} files in this folder")
            files += found
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise InputError(f"{path}: no such file or directory")
    if not files:
        raise InputError("no inputs: give image or video files, or folders of them")
    return files


def run_config(workdir: str, config=None):
    """The run's config (export.run_config), with a missing workdir named."""
    from tokenlearner_jax import export

    if not os.path.isdir(workdir):
        raise InputError(f"--workdir={workdir}: no such directory")
    return export.run_config(workdir, config)


def is_video(config) -> bool:
    return config.dataset.num_frames > 0


def input_extensions(config) -> tuple:
    """File name endings searched for in input folders: videos for a video model, else images."""
    from tokenlearner_jax.data import video

    return video.EXTENSIONS if is_video(config) else IMAGE_EXTENSIONS


class Predictor:
    """The model of a checkpoint with its dataset's evaluation preprocessing and class names.

    Attributes:
      config: the run's config.
      step: the checkpoint's step.
      class_names: one name per class id.
      video: whether the model classifies videos (config.dataset.num_frames > 0).
    """

    def __init__(self, workdir: str, config=None):
        from tokenlearner_jax import models
        from tokenlearner_jax.weights import init_from

        self.config = run_config(workdir, config)
        self.video = is_video(self.config)
        self.class_names, natural_images, self.multi_label = self._dataset_facts()
        self._preprocessor = self._make_preprocessor(natural_images)
        self.model = models.build(self.config.model)
        try:
            self.variables, self.step = init_from.restore_variables(workdir)
        except FileNotFoundError as e:
            raise InputError(f"--workdir={workdir}: {e}") from e
        self._forwards = {}

    def _dataset_facts(self):
        """(class names, natural_images, multi_label) of the run's dataset; class ids as names and natural
        images when the dataset is not on this machine (the bundled digits and synthetic data always are,
        and every other dataset holds photographs or videos)."""
        from tokenlearner_jax import data
        from tokenlearner_jax.data import registry

        num_classes = self.config.model.num_classes
        multi_label = self.config.get("loss", "softmax_xent") == "sigmoid_xent"
        try:
            source = registry.get_source(self.config.dataset)
        except (data.DatasetNotFoundError, FileNotFoundError):
            print(f"predict: dataset {self.config.dataset.name!r} is not available here; printing class ids "
                  f"instead of names", file=sys.stderr)
            return tuple(str(i) for i in range(num_classes)), True, multi_label
        names = source.class_names
        if len(names) != num_classes:
            raise InputError(f"the run's dataset {self.config.dataset.name!r} has {len(names)} classes here but "
                             f"the model has config.model.num_classes={num_classes}")
        return names, source.natural_images, multi_label or source.multi_label

    def _make_preprocessor(self, natural_images: bool):
        from tokenlearner_jax.data.preprocess import Preprocessor
        from tokenlearner_jax.data.video import VideoPreprocessor

        kind = VideoPreprocessor if self.video else Preprocessor
        return kind.from_config(self.config.dataset, natural_images)

    def load(self, path: str) -> np.ndarray:
        """One input file -> the model's input (float32 `[S, S, 3]`, or `[(views,) T, S, S, 3]` for videos)."""
        if self.video:
            from tokenlearner_jax.data import source, video

            try:
                return self._preprocessor.eval(video.VideoFile(path).decode())
            except source.UnreadableFile as e:
                raise InputError(f"{path}: not a readable video ({e})") from e
        from PIL import Image

        from tokenlearner_jax.data import preprocess

        try:
            with open(path, "rb") as f:
                image = preprocess.decode_image(f.read())
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise InputError(f"{path}: not a readable image ({type(e).__name__}: {e})") from e
        return self._preprocessor.eval(image)

    def _forward(self, keep_intermediates: bool):
        """jitted (variables, inputs `[batch, ...]`) -> (logits `[batch, classes]`, {name: intermediate})."""
        if keep_intermediates not in self._forwards:
            import flax
            import jax

            def forward(variables, inputs):
                views = inputs.shape[1] if inputs.ndim == 6 else 0  # [batch, views, T, S, S, 3]
                flat_inputs = inputs.reshape((-1,) + inputs.shape[2:]) if views else inputs
                logits, state = self.model.apply(variables, flat_inputs, train=False, mutable=["intermediates"])
                if views:  # as the trainer's evaluation: logits averaged over the views
                    logits = logits.reshape(-1, views, logits.shape[-1]).mean(axis=1)
                kept = {}
                if keep_intermediates:
                    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(state["intermediates"]), sep="/")
                    kept = {name: values[0] for name, values in flat.items()
                            if name.rsplit("/", 1)[-1] in _KEPT_INTERMEDIATES}
                return logits, kept

            self._forwards[keep_intermediates] = jax.jit(forward)
        return self._forwards[keep_intermediates]

    def predict(self, paths, *, batch_size: int = 32, keep_intermediates: bool = False):
        """Yields (paths, inputs, logits `[n, classes]`, intermediates) per batch of at most `batch_size`
        inputs; the last batch is padded to `batch_size` (one compiled shape) and the padding dropped."""
        forward = self._forward(keep_intermediates)
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            inputs = np.stack([self.load(path) for path in chunk])
            padded = np.concatenate([inputs, np.zeros((batch_size - len(chunk),) + inputs.shape[1:], inputs.dtype)])
            logits, intermediates = forward(self.variables, padded)
            # an intermediate holds a whole number of rows per input (views, temporal slices): keep the real ones
            kept = {k: np.asarray(v)[:len(chunk) * (v.shape[0] // batch_size)] for k, v in intermediates.items()}
            yield chunk, inputs, np.asarray(logits)[:len(chunk)], kept

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """Per-class probabilities: softmax, or per-class sigmoid for a multi-label run."""
        logits = logits.astype(np.float64)
        if self.multi_label:
            return 1.0 / (1.0 + np.exp(-logits))
        shifted = np.exp(logits - logits.max(-1, keepdims=True))
        return shifted / shifted.sum(-1, keepdims=True)

    def top_k(self, logits: np.ndarray, k: int) -> list:
        """[[{'class', 'name', 'probability'} x k] per row of `logits`], the most probable first."""
        scores = self.scores(logits)
        order = np.argsort(-scores, axis=-1, kind="stable")[:, :k]
        return [[{"class": int(c), "name": self.class_names[c], "probability": float(row[c])} for c in classes]
                for row, classes in zip(scores, order)]


def class_activation_map(feature_map: np.ndarray, head: dict, class_id: int) -> np.ndarray:
    """`[h, w, channels]` last feature map -> `[h, w]` map of class `class_id` under the linear head
    (kernel `[channels, classes]`, bias `[classes]`); its mean over positions is that class's logit."""
    return feature_map @ np.asarray(head["kernel"])[:, class_id] + np.asarray(head["bias"])[class_id]


def draw_attention(predictor: Predictor, path: str, inputs: np.ndarray, logits: np.ndarray, intermediates: dict,
                   index: int, output_dir: str) -> list:
    """PNGs of input `index` of a batch: its TokenLearner maps, or its class-activation map. Returns paths."""
    from tokenlearner_jax import visualize

    os.makedirs(output_dir, exist_ok=True)
    stem = os.path.splitext(os.path.basename(path))[0]
    prediction = int(logits[index].argmax())
    name = predictor.class_names[prediction]
    clip = inputs[index]
    if predictor.video and clip.ndim == 5:
        clip = clip[0]  # the first of several views
    frames = clip if predictor.video else clip[None]  # [T or 1, S, S, 3]
    shown = visualize.display_images(frames, predictor.config.dataset.normalize)
    written = []
    maps = {k.rsplit("/", 1)[0]: v for k, v in intermediates.items() if k.endswith("token_attention")}
    views = inputs.shape[1] if predictor.video and inputs.ndim == 6 else 1
    for module, attention in sorted(maps.items()):  # [inputs x views x temporal slices, tokens, positions]
        per_input = attention.shape[0] // len(logits)
        slices = per_input // views
        rows = attention[index * per_input:index * per_input + slices]  # the first view's slices
        grid = visualize.attention_grid(rows.shape[-1], *shown.shape[1:3])
        images = shown[np.arange(slices) * (len(shown) // slices)]  # the first frame of each temporal slice
        file = os.path.join(output_dir, f"{stem}_{module.replace('/', '_')}.png")
        visualize.plot_attention(images, rows.reshape(rows.shape[:2] + grid), None, [name] * slices,
                                 f"{path}: {module}, {rows.shape[1]} tokens", file)
        written.append(file)
    if not maps and "feature_map" in intermediates and "head" in predictor.variables["params"]:
        cam = class_activation_map(intermediates["feature_map"][index], predictor.variables["params"]["head"],
                                   prediction)
        file = os.path.join(output_dir, f"{stem}_class_attention.png")
        visualize.plot_class_attention(shown[:1], cam[None], None, [prediction],
                                       f"{path}: class-activation map of the predicted class", file,
                                       class_names=predictor.class_names)
        written.append(file)
    if not written:
        raise InputError(f"--attention_dir: the model ({predictor.config.model.name}) has no TokenLearner and "
                         f"sows no 'feature_map' before a linear head (NesT does)")
    return written


def run(workdir: str, inputs, *, config=None, top_k: int = 5, batch_size: int = 32, attention_dir: str = ""):
    """Predicts every input; returns [dict(input, predictions=top-k list, logits)] in input order."""
    config = run_config(workdir, config)
    paths = list_inputs(inputs, input_extensions(config))  # before the checkpoint: a typo fails fast
    predictor = Predictor(workdir, config)
    results = []
    for chunk, batch, logits, intermediates in predictor.predict(paths, batch_size=batch_size,
                                                                  keep_intermediates=bool(attention_dir)):
        for i, (path, top) in enumerate(zip(chunk, predictor.top_k(logits, top_k))):
            results.append(dict(input=path, predictions=top, logits=logits[i]))
            if attention_dir:
                draw_attention(predictor, path, batch, logits, intermediates, i, attention_dir)
    return results


def format_table(results) -> str:
    width = max(len(r["input"]) for r in results)
    lines = [f"{'input':<{width}}  top-{len(results[0]['predictions'])} (probability)"]
    for r in results:
        lines.append(f"{r['input']:<{width}}  " + ", ".join(f"{p['name']} {p['probability']:.1%}"
                                                            for p in r["predictions"]))
    return "\n".join(lines)


def format_jsonl(results) -> str:
    return "\n".join(json.dumps(dict(input=r["input"], predictions=r["predictions"])) for r in results)


def main(argv):
    if not FLAGS["verbosity"].present:  # library chatter (orbax, XLA) only on request: --verbosity=0
        logging.set_verbosity(logging.ERROR)
    if FLAGS.batch_size < 1 or FLAGS.top_k < 1:
        sys.exit(f"predict: --batch_size={FLAGS.batch_size} and --top_k={FLAGS.top_k} must be >= 1")
    try:
        results = run(FLAGS.workdir, argv[1:], config=FLAGS.config, top_k=FLAGS.top_k, batch_size=FLAGS.batch_size,
                      attention_dir=FLAGS.attention_dir)
    except (InputError, FileNotFoundError) as e:
        sys.exit(f"predict: {e}")
    print(format_jsonl(results) if FLAGS.format == "jsonl" else format_table(results))
    if FLAGS.attention_dir:
        print(f"attention maps in {FLAGS.attention_dir}", file=sys.stderr)


def define_flags():
    """Command-line flags, defined only when this module runs as a program."""
    config_flags.DEFINE_config_file("config", None, "configs/X.py[:arg]; default: the workdir's config.json.")
    flags.DEFINE_string("workdir", None, "A training workdir or a converted checkpoint (tokenlearner_jax.convert).")
    flags.DEFINE_integer("top_k", 5, "Classes shown per input.")
    flags.DEFINE_enum("format", "table", ["table", "jsonl"], "Output: an aligned table or one JSON object a line.")
    flags.DEFINE_integer("batch_size", 32, "Inputs per forward pass.")
    flags.DEFINE_string("attention_dir", "", "Write TokenLearner attention maps / NesT class-activation maps here.")
    flags.mark_flags_as_required(["workdir"])


def run_command():
    """The console script's entry point."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run_command()
