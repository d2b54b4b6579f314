"""grain input pipelines: checkpointable training iterator and eval batches.

Sharding: the global stream (shuffled, repeated, each element tagged with its
global position) is split round-robin over processes, so process p's k-th
local batch holds global positions k*GB + p + j*P (j < GB/P). The global batch
at step k is therefore the same set of examples for any process count, and
each process reads only its own records. Augmentation randomness is seeded by
(seed, global position), so a restored iterator reproduces batches exactly.
"""

import dataclasses
import math

import grain
import ml_collections
import numpy as np

from tokenlearner_jax.data import config as config_lib
from tokenlearner_jax.data import registry
from tokenlearner_jax.data.preprocess import Preprocessor, encode_label
from tokenlearner_jax.data.source import DatasetSource, SkippedFile
from tokenlearner_jax.data.video import VideoPreprocessor


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a configured dataset.

    Attributes:
      name: `config.dataset.name`.
      num_classes: Number of classes.
      image_shape: (H, W, C) of preprocessed images; (T, H, W, C) for videos
        (config.num_frames > 0), one view.
      num_train: Examples in `train_split`.
      num_eval: Examples in `eval_split`.
      multi_label: Labels are float32 multi-hot [num_classes] instead of int32.
    """

    name: str
    num_classes: int
    image_shape: tuple[int, ...]
    num_train: int
    num_eval: int
    multi_label: bool


def _get_source(config: ml_collections.ConfigDict) -> DatasetSource:
    config_lib.validate(config)
    source = registry.get_source(config)
    if config.num_frames > 0 and not getattr(source, "supports_video", False):
        raise ValueError(f"config.dataset.num_frames={config.num_frames}: dataset {config.name!r} holds images; "
                         "set it to 0, or use a video dataset")
    if config.num_classes not in (-1, source.num_classes):
        raise ValueError(
            f"config.dataset.num_classes={config.num_classes} but dataset"
            f" {config.name!r} has {source.num_classes} classes (use -1 to take"
            " it from the data)"
        )
    return source


def get_info(config: ml_collections.ConfigDict) -> DatasetInfo:
    """Returns the `DatasetInfo` of `config` (a `config.dataset` section)."""
    source = _get_source(config)
    s = config.image_size
    return DatasetInfo(
        name=config.name,
        num_classes=source.num_classes,
        image_shape=((config.num_frames,) if config.num_frames > 0 else ()) + (s, s, 3),
        num_train=len(source.split(config.train_split)),
        num_eval=len(source.split(config.eval_split)),
        multi_label=source.multi_label,
    )


def _local_batch_size(global_batch_size: int, process_index: int, process_count: int) -> int:
    if global_batch_size <= 0:
        raise ValueError(f"global_batch_size={global_batch_size} must be positive")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} not in [0, process_count=" f"{process_count})")
    if global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size={global_batch_size} is not divisible by" f" process_count={process_count}"
        )
    return global_batch_size // process_count


def _preprocessor(config: ml_collections.ConfigDict, source: DatasetSource):
    """The image `Preprocessor`, or for videos (num_frames > 0) the `VideoPreprocessor` built on it."""
    if config.num_frames > 0:
        return VideoPreprocessor.from_config(config, source.natural_images)
    return Preprocessor.from_config(config, source.natural_images)


def _read(split, index: int, fn):
    """(fn(image), label) of element `index`. A split with `read` (video files) decodes the element
    itself and applies fn, so that it can skip a file that fails to decode."""
    if hasattr(split, "read"):
        return split.read(index, fn)
    example = split[index]
    return fn(example["image"]), example["label"]


def _read_options(config: ml_collections.ConfigDict, local_batch_size: int) -> grain.ReadOptions:
    """Threaded element-level prefetch (state = element count, hence exact)."""
    if config.num_workers == 0:
        return grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
    return grain.ReadOptions(
        num_threads=config.num_workers,
        prefetch_buffer_size=max(2 * local_batch_size, config.num_workers),
    )


def train_iterator(
    config: ml_collections.ConfigDict,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.DatasetIterator:
    """Infinite, checkpointable iterator of this process's training batches.

    Args:
      config: The `config.dataset` section.
      global_batch_size: Batch size over all processes (divisible by
        process_count).
      seed: Shuffle (new order each epoch) and augmentation seed.
      process_index: This process's index.
      process_count: Number of processes.

    Returns:
      A grain iterator (with JSON-serialisable `get_state()` / `set_state()`)
      of dict(image=float32 [B, S, S, 3] (videos [B, T, S, S, 3]), label=int32
      [B] or float32 multi-hot [B, num_classes]) with
      B = global_batch_size // process_count.
    """
    local = _local_batch_size(global_batch_size, process_index, process_count)
    source = _get_source(config)
    split = source.split(config.train_split)
    prep = _preprocessor(config, source)

    def load(position_and_index: tuple[int, int]) -> dict[str, np.ndarray]:
        position, index = position_and_index
        rng = np.random.default_rng([seed, int(position)])
        image, label = _read(split, int(index), lambda image: prep.train(image, rng))
        return {"image": image, "label": encode_label(label, source.num_classes, source.multi_label)}

    ds = (
        grain.MapDataset.range(len(split))
        .shuffle(seed=seed)
        .repeat(None)
        .map_with_index(lambda position, index: (position, index))
        .slice(slice(process_index, None, process_count))
        .map(load)
        .to_iter_dataset(_read_options(config, local))
        .batch(local, drop_remainder=True)
    )
    return iter(ds)


def eval_batches(
    config: ml_collections.ConfigDict,
    *,
    global_batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    split: str | None = None,
) -> grain.DatasetIterator:
    """Finite iterator over a whole split in a fixed order, without augmentation.

    The split is padded to a multiple of global_batch_size; position i of the
    padded split goes to process i % process_count. Every process yields
    ceil(N / global_batch_size) batches and each readable example appears once
    over all processes and batches. An unreadable file (with
    config.skip_corrupt_images) is left out, not replaced: its position holds
    padding with mask 0 and skipped 1, so the split's eval/num_examples counts
    only the examples read, and the sum of `skipped` over all batches of all
    processes is the eval/skipped_files the loop reports.

    Args:
      config: The `config.dataset` section.
      global_batch_size: Batch size over all processes.
      process_index: This process's index.
      process_count: Number of processes.
      split: Split to read; defaults to `config.eval_split`.

    Returns:
      Iterator of dict(image=float32 [B, S, S, 3], label=int32 [B] (or float32
      [B, num_classes]), mask=float32 [B]: 1 real, 0 padding or unreadable,
      skipped=float32 [B]: 1 for an unreadable file left out) with
      B = global_batch_size // process_count. Videos are [B, T, S, S, 3], or
      [B, views, T, S, S, 3] with several evaluation views.
    """
    local = _local_batch_size(global_batch_size, process_index, process_count)
    source = _get_source(config)
    data = source.split(config.eval_split if split is None else split)
    reader = getattr(data, "first_readable", None)
    if reader is not None:  # splits of files: leave unreadable ones out rather than substitute
        reader.substitute = False
    prep = _preprocessor(config, source)
    num_real = len(data)
    padded = math.ceil(num_real / global_batch_size) * global_batch_size
    s = config.image_size
    pad_image = np.zeros(prep.eval_shape if config.num_frames > 0 else (s, s, 3), np.float32)
    pad_label = np.zeros([source.num_classes], np.float32) if source.multi_label else np.int32(0)

    def padding(skipped: float) -> dict[str, np.ndarray]:
        return {"image": pad_image, "label": pad_label, "mask": np.float32(0.0), "skipped": np.float32(skipped)}

    def load(position: int) -> dict[str, np.ndarray]:
        if position >= num_real:
            return padding(0.0)
        try:
            image, label = _read(data, int(position), prep.eval)
        except SkippedFile:
            return padding(1.0)
        return {
            "image": image,
            "label": encode_label(label, source.num_classes, source.multi_label),
            "mask": np.float32(1.0),
            "skipped": np.float32(0.0),
        }

    ds = (
        grain.MapDataset.range(padded)
        .slice(slice(process_index, None, process_count))
        .map(load)
        .to_iter_dataset(_read_options(config, local))
        .batch(local, drop_remainder=True)
    )
    return iter(ds)
