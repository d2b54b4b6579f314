"""Random erasing (data/augment.py): one rectangle of N(0, 1) noise within the documented area and
aspect ranges, with the given probability, deterministic per generator state, after normalisation."""

import numpy as np
import pytest

from tokenlearner_jax import data
from tokenlearner_jax.data import augment, preprocess

IMAGE = np.random.RandomState(0).uniform(-1, 1, (32, 48, 3)).astype(np.float32)


def erased_box(before, after):
    """(top, left, height, width) of the changed pixels, checking they form one full rectangle."""
    rows, cols = np.nonzero(np.any(before != after, axis=-1))
    top, left = rows.min(), cols.min()
    height, width = rows.max() - top + 1, cols.max() - left + 1
    assert len(rows) == height * width  # every pixel of the bounding box changed: a rectangle
    return top, left, height, width


def test_prob_one_erases_one_rectangle_in_range():
    for seed in range(50):
        out = augment.random_erasing(IMAGE, np.random.default_rng(seed), 1.0)
        assert out.shape == IMAGE.shape and out.dtype == IMAGE.dtype
        _, _, h, w = erased_box(IMAGE, out)
        area = h * w / (32 * 48)
        assert 0.01 <= area <= 0.4, (seed, h, w)  # 2% .. 1/3, widened for rounding of the sides
        assert 0.2 <= h / w <= 4.5, (seed, h, w)  # 0.3 .. 3.3, widened for rounding
    np.testing.assert_array_equal(IMAGE, np.random.RandomState(0).uniform(-1, 1, (32, 48, 3)).astype(np.float32))


def test_the_noise_is_standard_normal_per_pixel_and_channel():
    values = []
    for seed in range(40):
        out = augment.random_erasing(IMAGE, np.random.default_rng(seed), 1.0)
        top, left, h, w = erased_box(IMAGE, out)
        values.append(out[top:top + h, left:left + w].ravel())
    values = np.concatenate(values)
    assert abs(values.mean()) < 0.05 and abs(values.std() - 1.0) < 0.05


def test_probability_and_determinism():
    erased = sum(np.any(augment.random_erasing(IMAGE, np.random.default_rng(s), 0.25) != IMAGE) for s in range(800))
    assert 0.20 < erased / 800 < 0.30
    np.testing.assert_array_equal(augment.random_erasing(IMAGE, np.random.default_rng(3), 1.0),
                                  augment.random_erasing(IMAGE, np.random.default_rng(3), 1.0))
    assert augment.random_erasing(IMAGE, np.random.default_rng(3), 0.0) is IMAGE


def test_preprocessor_erases_after_normalising_in_training_only():
    config = data.default_dataset_config()
    config.update(augment="none", random_erasing_prob=1.0, normalize="unit")
    prep = preprocess.Preprocessor.from_config(config, natural_images=False)
    image = np.full((32, 32, 3), 255, np.uint8)
    out = prep.train(image, np.random.default_rng(0))
    assert (out < 0).any() and np.isclose(out, 1.0).mean() > 0.6  # noise in [0, 1]-normalised white
    np.testing.assert_array_equal(prep.eval(image), np.ones((32, 32, 3), np.float32))


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_bad_probability_is_rejected(value):
    config = data.default_dataset_config()
    config.random_erasing_prob = value
    with pytest.raises(ValueError, match="config.dataset.random_erasing_prob"):
        data.config.validate(config)
