"""RandAugment (arXiv 1909.13719) on uint8 images with PIL, in the "increasing" flavour of timm's
`rand-m9-mstd0.5-inc1` (the PoolFormer / DeiT recipe): every op gets stronger as the magnitude grows.

`rand_augment(image, rng, num_ops, magnitude, magnitude_std)` draws `num_ops` ops uniformly (with
replacement); each is applied with probability 0.5 at a magnitude drawn from N(magnitude,
magnitude_std^2) clipped to [0, max(10, magnitude)]; level = magnitude / 10. Magnitudes above the
nominal maximum 10 (up to 20) extrapolate every op, as TensorFlow's RandAugment does for the
magnitude 15 of the MaxViT / EfficientNet recipes. Signed ops (rotations, shears,
translations, enhancements) flip their sign with probability 0.5. At level 1:
  rotate +-30 deg, shear_x/y +-0.3, translate_x/y +-45% of the side, color / contrast / brightness /
  sharpness factor 1 +- 0.9, posterize to 4 bits, solarize above 0, solarize_add +110;
  auto_contrast, equalize and invert ignore the level.
Geometric ops fill uncovered pixels with the ImageNet mean colour. All randomness comes from `rng`,
so an image is augmented identically for the same generator state.

`random_erasing` (the DeiT / NesT recipe) works on the normalised float image, after RandAugment.
"""

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

MAX_MAGNITUDE = 10.0  # the magnitude of level 1
MAX_EXTRAPOLATED_MAGNITUDE = 20.0
APPLY_PROB = 0.5
_FILL = (124, 116, 104)


def _signed(level, rng):
    return -level if rng.random() < 0.5 else level


def _affine(image, coefficients):
    return image.transform(image.size, Image.Transform.AFFINE, coefficients, resample=Image.Resampling.BILINEAR,
                           fillcolor=_FILL)


def _rotate(image, level, rng):
    return image.rotate(_signed(30.0 * level, rng), resample=Image.Resampling.BILINEAR, fillcolor=_FILL)


def _shear_x(image, level, rng):
    return _affine(image, (1, _signed(0.3 * level, rng), 0, 0, 1, 0))


def _shear_y(image, level, rng):
    return _affine(image, (1, 0, 0, _signed(0.3 * level, rng), 1, 0))


def _translate_x(image, level, rng):
    return _affine(image, (1, 0, _signed(0.45 * level, rng) * image.size[0], 0, 1, 0))


def _translate_y(image, level, rng):
    return _affine(image, (1, 0, 0, 0, 1, _signed(0.45 * level, rng) * image.size[1]))


def _enhance(enhancer):
    def op(image, level, rng):
        return enhancer(image).enhance(1.0 + _signed(0.9 * level, rng))
    return op


def _posterize(image, level, rng):
    del rng
    return ImageOps.posterize(image, max(1, 8 - int(round(4 * level))))


def _solarize(image, level, rng):
    del rng
    return ImageOps.solarize(image, int(round(256 - 256 * level)))


def _solarize_add(image, level, rng):
    del rng
    pixels = np.asarray(image).astype(np.int32)
    added = np.where(pixels < 128, np.minimum(pixels + int(round(110 * level)), 255), pixels)
    return Image.fromarray(added.astype(np.uint8))


def _level_free(function):
    def op(image, level, rng):
        del level, rng
        return function(image)
    return op


OPS = {
    "auto_contrast": _level_free(ImageOps.autocontrast),
    "equalize": _level_free(ImageOps.equalize),
    "invert": _level_free(ImageOps.invert),
    "rotate": _rotate,
    "posterize": _posterize,
    "solarize": _solarize,
    "solarize_add": _solarize_add,
    "color": _enhance(ImageEnhance.Color),
    "contrast": _enhance(ImageEnhance.Contrast),
    "brightness": _enhance(ImageEnhance.Brightness),
    "sharpness": _enhance(ImageEnhance.Sharpness),
    "shear_x": _shear_x,
    "shear_y": _shear_y,
    "translate_x": _translate_x,
    "translate_y": _translate_y,
}
_NAMES = tuple(OPS)


def rand_augment(image: np.ndarray, rng: np.random.Generator, num_ops: int, magnitude: float,
                 magnitude_std: float = 0.0) -> np.ndarray:
    """uint8 `[height, width, 3]` -> uint8 `[height, width, 3]` after `num_ops` random ops (module docstring)."""
    out = Image.fromarray(image)
    for _ in range(num_ops):
        name = _NAMES[int(rng.integers(len(_NAMES)))]
        if rng.random() >= APPLY_PROB:
            continue
        level = magnitude + magnitude_std * rng.standard_normal() if magnitude_std > 0 else magnitude
        out = OPS[name](out, float(np.clip(level, 0.0, max(MAX_MAGNITUDE, magnitude))) / MAX_MAGNITUDE, rng)
    return np.asarray(out)


def random_erasing(image: np.ndarray, rng: np.random.Generator, prob: float, area_range=(0.02, 1 / 3),
                   aspect_range=(0.3, 1 / 0.3), attempts: int = 10) -> np.ndarray:
    """Random erasing (arXiv 1708.04896) in timm's 'pixel' mode, on a normalised float image `[h, w, c]`.

    With probability `prob`, one rectangle covering a fraction of the area drawn uniformly from
    `area_range`, with a log-uniform aspect ratio (height / width) in `aspect_range`, is replaced by
    N(0, 1) noise per pixel and channel (the normalised data's scale); the first of `attempts` draws
    that fits is used, none if none fits. Returns a new array; the input is left untouched."""
    if rng.random() >= prob:
        return image
    height, width = image.shape[:2]
    log_aspect = (np.log(aspect_range[0]), np.log(aspect_range[1]))
    for _ in range(attempts):
        area = height * width * rng.uniform(*area_range)
        aspect = np.exp(rng.uniform(*log_aspect))
        h, w = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
        if 0 < h < height and 0 < w < width:
            top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            out = image.copy()
            out[top:top + h, left:left + w] = rng.standard_normal((h, w) + image.shape[2:]).astype(image.dtype)
            return out
    return image
