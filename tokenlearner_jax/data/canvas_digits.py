"""Canvas digits: one of scikit-learn's digits, upscaled, at a random place on a 64x64 canvas among clutter,
with its box recorded: a weakly-supervised localisation benchmark made from bundled data (no download).

Each image of the fixed digits split (data/digits.py: 1,437 train / 360 test) gives `COPIES` canvases
(5,748 train / 1,440 test), each drawn from a generator seeded by (split, image, copy), so the dataset is
the same on every machine and in every process:
- the digit is upscaled (bilinear) to a side drawn uniformly from DIGIT_SIDES and placed anywhere it fits;
- clutter as in cluttered MNIST (Mnih et al., arXiv 1406.6247): NUM_FRAGMENTS pieces, each a random
  FRAGMENT x FRAGMENT crop of another training digit upscaled to 24x24, at random places; pixels combine
  by maximum, so fragments may cross the digit without hiding it;
- the box is the tight box of the digit's non-zero pixels, (top, left, bottom, right) in canvas pixels,
  bottom and right exclusive. Fragments come from the training split only, so no test digit leaks into
  the training images.

The class is the digit (10 classes). Elements are dict(image=uint8 [64, 64, 3], label=int,
box=int64 [4]); the input pipeline reads image and label, and the localisation benchmark reads the boxes
with `boxes(split)` (in the eval pipeline's order) and `scale_boxes` for another `config.dataset.image_size`.
"""

from collections.abc import Sequence
import dataclasses
import functools

import ml_collections
import numpy as np

from tokenlearner_jax.data import digits, registry
from tokenlearner_jax.data.preprocess import resize
from tokenlearner_jax.data.source import DatasetSource, Example

CANVAS = 64
DIGIT_SIDES = (16, 32)  # inclusive range of the upscaled digit's side
FRAGMENT = 8  # side of a clutter piece, a third of a digit upscaled to 24 (cluttered MNIST: 8 of 28)
FRAGMENT_SOURCE_SIDE = 24
NUM_FRAGMENTS = (4, 8)  # inclusive range
COPIES = 4
_SPLIT_IDS = {"train": 0, "test": 1}


def tight_box(mask: np.ndarray) -> np.ndarray:
    """(top, left, bottom, right), ends exclusive, of the True pixels of a 2D mask (which must have some)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        raise ValueError("tight_box: the mask is empty")
    return np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1], np.int64)


def make_canvas(digit: np.ndarray, fragment_sources: np.ndarray, rng: np.random.Generator,
                num_fragments=NUM_FRAGMENTS) -> tuple[np.ndarray, np.ndarray]:
    """uint8 `[8, 8, 3]` digit and uint8 `[n, 8, 8, 3]` clutter sources -> (uint8 `[CANVAS, CANVAS, 3]`
    canvas, int64 `[4]` box of the digit); `num_fragments` is an inclusive range."""
    side = int(rng.integers(DIGIT_SIDES[0], DIGIT_SIDES[1] + 1))
    top, left = (int(v) for v in rng.integers(0, CANVAS - side + 1, size=2))
    canvas = np.zeros((CANVAS, CANVAS, 3), np.uint8)
    for _ in range(int(rng.integers(num_fragments[0], num_fragments[1] + 1))):
        source = resize(fragment_sources[int(rng.integers(len(fragment_sources)))], FRAGMENT_SOURCE_SIDE,
                        FRAGMENT_SOURCE_SIDE)
        y, x = (int(v) for v in rng.integers(0, FRAGMENT_SOURCE_SIDE - FRAGMENT + 1, size=2))
        piece = source[y:y + FRAGMENT, x:x + FRAGMENT]
        py, px = (int(v) for v in rng.integers(0, CANVAS - FRAGMENT + 1, size=2))
        np.maximum(canvas[py:py + FRAGMENT, px:px + FRAGMENT], piece, out=canvas[py:py + FRAGMENT, px:px + FRAGMENT])
    scaled = resize(digit, side, side)
    region = canvas[top:top + side, left:left + side]
    np.maximum(region, scaled, out=region)
    box = tight_box(scaled.max(axis=-1) > 0) + np.array([top, left, top, left])
    return canvas, box


@functools.cache
def load_split_arrays() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{'train'|'test': (uint8 [n * COPIES, 64, 64, 3], int64 [n * COPIES], int64 [n * COPIES, 4] boxes)};
    element index * COPIES + copy comes from digit `index` of data/digits.py's split. Built once (seconds)."""
    arrays = digits.load_split_arrays()
    fragment_sources = arrays["train"][0]
    out = {}
    for split, (images, labels) in arrays.items():
        canvases, boxes = [], []
        for index, image in enumerate(images):
            for copy in range(COPIES):
                canvas, box = make_canvas(image, fragment_sources,
                                          np.random.default_rng([_SPLIT_IDS[split], index, copy]))
                canvases.append(canvas)
                boxes.append(box)
        out[split] = (np.stack(canvases), np.repeat(labels, COPIES), np.stack(boxes))
    return out


def boxes(split: str) -> np.ndarray:
    """int64 `[n, 4]` (top, left, bottom, right) digit boxes of `split` in 64x64 canvas pixels, in the
    order of the split (and of the eval pipeline)."""
    arrays = load_split_arrays()
    if split not in arrays:
        raise ValueError(f"canvas_digits has splits {sorted(arrays)}, not {split!r}")
    return arrays[split][2]


def scale_boxes(canvas_boxes: np.ndarray, image_size: int) -> np.ndarray:
    """Boxes in canvas pixels -> float64 boxes in the pixels of images resized to `image_size` (the
    pipeline's plain resize of the whole canvas)."""
    return np.asarray(canvas_boxes, np.float64) * (image_size / CANVAS)


@dataclasses.dataclass(frozen=True)
class _CanvasSplit(Sequence):
    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Example:
        return {"image": self.images[index], "label": int(self.labels[index]), "box": self.boxes[index]}


@dataclasses.dataclass(frozen=True)
class CanvasDigitsSource(DatasetSource):
    """Splits 'train' (5,748) and 'test' (1,440)."""

    def split(self, split: str) -> _CanvasSplit:
        arrays = load_split_arrays()
        if split not in arrays:
            raise ValueError(f"canvas_digits has splits {sorted(arrays)}, not config split {split!r}")
        return _CanvasSplit(*arrays[split])


@registry.register("canvas_digits")
def build(config: ml_collections.ConfigDict) -> CanvasDigitsSource:
    del config  # Nothing to configure.
    return CanvasDigitsSource(name="canvas_digits", num_classes=10, multi_label=False, natural_images=False)
