"""NumPy/PIL image preprocessing shared by all datasets.

Inputs are uint8 [h, w, 3] images; outputs are float32 [S, S, 3] with
S = config.image_size, normalised per `config.normalize`.
"""

import dataclasses
import io
import math

import ml_collections
import numpy as np
from PIL import Image

from tokenlearner_jax.data import augment as augment_lib

_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255.0
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255.0


def decode_image(data: bytes) -> np.ndarray:
    """Decodes encoded image bytes (JPEG, PNG, ...) to uint8 [h, w, 3]."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def to_rgb_uint8(image) -> np.ndarray:
    """Encoded bytes, [h, w], [h, w, 1] or [h, w, 3] -> uint8 [h, w, 3]."""
    if isinstance(image, bytes):
        return decode_image(image)
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 [h, w, 1|3] image, got {image.dtype}" f" {image.shape}")
    return image


def resize(image: np.ndarray, height: int, width: int, box=None) -> np.ndarray:
    """Bilinear resize of uint8 [h, w, 3] (or its `box`) to [height, width, 3]."""
    if box is None and image.shape[:2] == (height, width):
        return image
    out = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR, box=box)
    return np.asarray(out)


def resize_central_crop(image: np.ndarray, size: int, crop_fraction: float) -> np.ndarray:
    """Shorter side -> size/crop_fraction, then central crop [size, size, 3]."""
    h, w = image.shape[:2]
    short = max(size, round(size / crop_fraction))
    scale = short / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    image = resize(image, new_h, new_w)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return image[top : top + size, left : left + size]


def random_shift(image: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Translates [h, w, c] by up to `max_shift` pixels per axis, zero fill."""
    if max_shift == 0:
        return image
    dy, dx = rng.integers(-max_shift, max_shift + 1, size=2)
    h, w = image.shape[:2]
    out = np.zeros_like(image)
    src_y = slice(max(0, -dy), min(h, h - dy))
    src_x = slice(max(0, -dx), min(w, w - dx))
    dst_y = slice(max(0, dy), min(h, h + dy))
    dst_x = slice(max(0, dx), min(w, w + dx))
    out[dst_y, dst_x] = image[src_y, src_x]
    return out


def inception_crop(
    image: np.ndarray,
    size: int,
    rng: np.random.Generator,
    area_range: tuple[float, float] = (0.08, 1.0),
    aspect_range: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> np.ndarray:
    """Inception-style random-resized crop to [size, size, 3] plus random h-flip.

    Samples a box covering `area_range` of the image with log-uniform aspect
    ratio in `aspect_range`; after `attempts` failures uses the whole image.
    """
    h, w = image.shape[:2]
    box = (0, 0, w, h)
    log_aspect = (math.log(aspect_range[0]), math.log(aspect_range[1]))
    for _ in range(attempts):
        area = h * w * rng.uniform(*area_range)
        aspect = math.exp(rng.uniform(*log_aspect))
        crop_w = int(round(math.sqrt(area * aspect)))
        crop_h = int(round(math.sqrt(area / aspect)))
        if 0 < crop_w <= w and 0 < crop_h <= h:
            top = int(rng.integers(0, h - crop_h + 1))
            left = int(rng.integers(0, w - crop_w + 1))
            box = (left, top, left + crop_w, top + crop_h)
            break
    out = resize(image, size, size, box=box)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return out


def normalize(image: np.ndarray, mode: str) -> np.ndarray:
    """uint8 [..., 3] -> float32 normalised per `mode` (see config.normalize)."""
    x = image.astype(np.float32)
    if mode == "imagenet":
        return (x - _IMAGENET_MEAN) / _IMAGENET_STD
    if mode == "minus_one_one":
        return x / 127.5 - 1.0
    if mode == "unit":
        return x / 255.0
    raise ValueError(f"config.dataset.normalize={mode!r} is not supported")


def encode_label(label, num_classes: int, multi_label: bool) -> np.ndarray:
    """Class id -> int32 scalar; class ids -> float32 multi-hot [num_classes]."""
    if not multi_label:
        return np.int32(label)
    target = np.zeros([num_classes], np.float32)
    target[np.asarray(label, np.int64)] = 1.0
    return target


@dataclasses.dataclass(frozen=True)
class Preprocessor:
    """Train/eval image preprocessing for one dataset config.

    Attributes:
      image_size: Output side S.
      augment: 'none' | 'shift' | 'inception_crop'.
      shift_pixels: Maximum translation of 'shift'.
      eval_crop_fraction: Central-crop fraction for natural images.
      normalize_mode: See `normalize`.
      natural_images: Eval (and un-augmented train) uses resize + central crop
        instead of a plain resize.
      randaugment_num_ops, randaugment_magnitude, randaugment_magnitude_std:
        RandAugment after `augment` in training (0 ops: off); see augment.py.
      random_erasing_prob: Random erasing of the normalised training image
        (0: off); see augment.py.
    """

    image_size: int
    augment: str
    shift_pixels: int
    eval_crop_fraction: float
    normalize_mode: str
    natural_images: bool
    randaugment_num_ops: int = 0
    randaugment_magnitude: float = 9.0
    randaugment_magnitude_std: float = 0.0
    random_erasing_prob: float = 0.0

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, natural_images: bool) -> "Preprocessor":
        return cls(
            image_size=config.image_size,
            augment=config.augment,
            shift_pixels=config.shift_pixels,
            eval_crop_fraction=config.eval_crop_fraction,
            normalize_mode=config.normalize,
            natural_images=natural_images,
            randaugment_num_ops=config.randaugment_num_ops,
            randaugment_magnitude=config.randaugment_magnitude,
            randaugment_magnitude_std=config.randaugment_magnitude_std,
            random_erasing_prob=config.get("random_erasing_prob", 0.0),
        )

    def _deterministic(self, image: np.ndarray) -> np.ndarray:
        s = self.image_size
        if self.natural_images:
            return resize_central_crop(image, s, self.eval_crop_fraction)
        return resize(image, s, s)

    def eval(self, image: np.ndarray) -> np.ndarray:
        """uint8 [h, w, 3] -> float32 [S, S, 3], no randomness."""
        return normalize(self._deterministic(image), self.normalize_mode)

    def train(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """uint8 [h, w, 3] -> float32 [S, S, 3] with `augment` drawn from `rng`."""
        if self.augment == "inception_crop":
            out = inception_crop(image, self.image_size, rng)
        elif self.augment == "shift":
            out = random_shift(self._deterministic(image), self.shift_pixels, rng)
        else:
            out = self._deterministic(image)
        if self.randaugment_num_ops:
            out = augment_lib.rand_augment(
                np.ascontiguousarray(out),
                rng,
                self.randaugment_num_ops,
                self.randaugment_magnitude,
                self.randaugment_magnitude_std,
            )
        out = normalize(out, self.normalize_mode)
        if self.random_erasing_prob:
            out = augment_lib.random_erasing(out, rng, self.random_erasing_prob)
        return out
