"""scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes).

A fixed stratified split: 1,437 'train' / 360 'test' examples. Pixel values
0..16 are scaled to uint8 0..255 and replicated to 3 channels.
"""

from collections.abc import Sequence
import dataclasses
import functools

import ml_collections
import numpy as np
from sklearn import datasets as sk_datasets
from sklearn import model_selection

from tokenlearner_jax.data import registry
from tokenlearner_jax.data.source import DatasetSource, Example

NUM_TEST = 360
SPLIT_SEED = 0


@functools.cache
def _load_all() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits: (uint8 [n, 8, 8, 3] in 0..255, int64 [n])."""
    digits = sk_datasets.load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    images = np.repeat(images[..., None], 3, axis=-1)
    return images, digits.target.astype(np.int64)


@functools.cache
def split_indices() -> dict[str, np.ndarray]:
    """Fixed stratified split: sorted indices into `load_digits()` per split."""
    _, labels = _load_all()
    train_idx, test_idx = model_selection.train_test_split(
        np.arange(len(labels)),
        test_size=NUM_TEST,
        random_state=SPLIT_SEED,
        stratify=labels,
    )
    return {"train": np.sort(train_idx), "test": np.sort(test_idx)}


@functools.cache
def load_split_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train'|'test': (uint8 [n, 8, 8, 3], int64 [n])}, loaded once."""
    images, labels = _load_all()
    return {split: (images[idx], labels[idx]) for split, idx in split_indices().items()}


@dataclasses.dataclass(frozen=True)
class _ArraySplit(Sequence):
    """In-memory split: element i is dict(image=uint8 [8, 8, 3], label=int)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Example:
        return {"image": self.images[index], "label": int(self.labels[index])}


@dataclasses.dataclass(frozen=True)
class DigitsSource(DatasetSource):
    """Splits 'train' (1,437) and 'test' (360)."""

    def split(self, split: str) -> _ArraySplit:
        arrays = load_split_arrays()
        if split not in arrays:
            raise ValueError(f"digits has splits {sorted(arrays)}, not config split {split!r}")
        return _ArraySplit(*arrays[split])


@registry.register("digits")
def build(config: ml_collections.ConfigDict) -> DigitsSource:
    del config  # Nothing to configure.
    return DigitsSource(name="digits", num_classes=10, multi_label=False, natural_images=False)
