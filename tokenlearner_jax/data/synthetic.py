"""Synthetic datasets: random uint8 images and labels, generated on the fly.

Element i of a split is a deterministic function of (split, i): images are
uint8 [image_size, image_size, 3] (videos uint8 [num_frames, image_size, image_size, 3] when
config.dataset.num_frames > 0). 'synthetic': one label uniform in [0, num_classes);
'synthetic_multilabel': a set of one to three distinct classes (multi-hot targets).
"""

from collections.abc import Sequence
import dataclasses

import ml_collections
import numpy as np

from tokenlearner_jax.data import registry
from tokenlearner_jax.data.source import DatasetSource, Example

DEFAULT_NUM_CLASSES = 1000
_SEED = 1234
_SPLIT_IDS = {"train": 0, "validation": 1, "test": 2}


@dataclasses.dataclass(frozen=True)
class _RandomSplit(Sequence):
    """`size` random examples; element i is seeded by (_SEED, split_id, i)."""

    split_id: int
    size: int
    image_size: int
    num_classes: int
    num_frames: int = 0
    multi_label: bool = False

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Example:
        if not 0 <= index < self.size:
            raise IndexError(index)
        rng = np.random.default_rng([_SEED, self.split_id, index])
        s = self.image_size
        frames = (self.num_frames,) if self.num_frames > 0 else ()
        image = rng.integers(0, 256, size=frames + (s, s, 3), dtype=np.uint8)
        if self.multi_label:
            count = int(rng.integers(1, min(3, self.num_classes) + 1))
            return {"image": image, "label": np.sort(rng.choice(self.num_classes, size=count, replace=False))}
        return {"image": image, "label": int(rng.integers(self.num_classes))}


@dataclasses.dataclass(frozen=True)
class SyntheticSource(DatasetSource):
    """Split 'train' has train_size examples, 'validation'/'test' eval_size. A TFDS slice such as
    'train[:99%]' names its base split, so any ImageNet config runs on synthetic data unchanged."""

    image_size: int
    train_size: int
    eval_size: int
    num_frames: int = 0
    supports_video = True  # class attribute: videos when config.dataset.num_frames > 0

    def split(self, split: str) -> _RandomSplit:
        split = split.split("[", 1)[0]
        if split not in _SPLIT_IDS:
            raise ValueError(f"synthetic has splits {sorted(_SPLIT_IDS)}, not {split!r}")
        size = self.train_size if split == "train" else self.eval_size
        return _RandomSplit(_SPLIT_IDS[split], size, self.image_size, self.num_classes, self.num_frames,
                            self.multi_label)


@registry.register("synthetic")
def build(config: ml_collections.ConfigDict) -> SyntheticSource:
    return _build(config, multi_label=False)


@registry.register("synthetic_multilabel")
def build_multilabel(config: ml_collections.ConfigDict) -> SyntheticSource:
    return _build(config, multi_label=True)


def _build(config: ml_collections.ConfigDict, multi_label: bool) -> SyntheticSource:
    num_classes = DEFAULT_NUM_CLASSES if config.num_classes == -1 else config.num_classes
    return SyntheticSource(
        name=config.name,
        num_classes=num_classes,
        multi_label=multi_label,
        natural_images=False,
        image_size=config.image_size,
        train_size=config.synthetic_train_size,
        eval_size=config.synthetic_eval_size,
        num_frames=config.num_frames,
    )
