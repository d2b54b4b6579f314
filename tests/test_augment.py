"""RandAugment (data/augment.py): every op's shape and dtype, determinism under a fixed generator, the
magnitude's effect, and its place in the training preprocessing."""

import numpy as np
import pytest
from PIL import Image

from tokenlearner_jax import data
from tokenlearner_jax.data import augment
from tokenlearner_jax.data import config as data_config
from tokenlearner_jax.data.preprocess import Preprocessor


def photo(height=40, width=48, seed=0):
    """A smooth colour gradient with noise: every op changes it."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (height + width)], axis=-1)
    return np.clip(base + rng.randint(-20, 20, base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", sorted(augment.OPS))
def test_every_op_keeps_shape_and_dtype_and_changes_the_image(name):
    image = photo()
    out = np.asarray(augment.OPS[name](Image.fromarray(image), 0.9, np.random.default_rng(0)))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image)


def test_same_generator_state_same_result():
    image = photo()
    a = augment.rand_augment(image, np.random.default_rng([7, 3]), 2, 9.0, 0.5)
    b = augment.rand_augment(image, np.random.default_rng([7, 3]), 2, 9.0, 0.5)
    np.testing.assert_array_equal(a, b)
    outputs = {augment.rand_augment(image, np.random.default_rng([7, i]), 2, 9.0, 0.5).tobytes()
               for i in range(20)}
    assert len(outputs) > 10  # different draws give different images
    assert any(out == image.tobytes() for out in outputs)  # each op runs with probability 1/2: sometimes none


def test_zero_ops_or_zero_magnitude_geometry_leave_the_image():
    image = photo()
    np.testing.assert_array_equal(augment.rand_augment(image, np.random.default_rng(0), 0, 9.0), image)
    for name in ("rotate", "shear_x", "translate_y", "brightness"):
        out = np.asarray(augment.OPS[name](Image.fromarray(image), 0.0, np.random.default_rng(0)))
        np.testing.assert_array_equal(out, image)


def test_larger_magnitude_changes_more():
    image = photo()
    def change(level):
        out = augment.OPS["shear_x"](Image.fromarray(image), level, np.random.default_rng(1))
        return np.abs(np.asarray(out, np.int32) - image).mean()

    assert change(0.2) < change(0.5) < change(1.0) < change(1.5)


def test_magnitudes_past_the_nominal_maximum_extrapolate_every_op():
    image = photo()
    for name, op in augment.OPS.items():
        out = np.asarray(op(Image.fromarray(image), 2.0, np.random.default_rng(0)))  # magnitude 20
        assert out.shape == image.shape and out.dtype == np.uint8, name
    # The same generator state draws the same ops and signs at any magnitude (no noise), so only the
    # strength differs: 15 is not clipped back to 10.
    def change(magnitude):
        outs = [augment.rand_augment(image, np.random.default_rng(seed), 2, magnitude) for seed in range(12)]
        return np.mean([np.abs(out.astype(np.int32) - image).mean() for out in outs])

    assert change(10.0) < change(15.0)


def preprocessor(num_ops, natural_images=True):
    config = data.default_dataset_config()
    config.image_size = 32
    config.augment = "inception_crop"
    config.randaugment_num_ops = num_ops
    return Preprocessor.from_config(config, natural_images=natural_images)


def test_preprocessor_applies_it_in_training_only():
    image = photo(64, 80)
    plain, augmented = preprocessor(0), preprocessor(3)
    outputs = [augmented.train(image, np.random.default_rng([0, i])) for i in range(6)]
    for i, out in enumerate(outputs):
        assert out.shape == (32, 32, 3) and out.dtype == np.float32
        np.testing.assert_array_equal(out, augmented.train(image, np.random.default_rng([0, i])))
    # The crop draws come first from the same generator, so the two differ only by RandAugment.
    differ = [not np.array_equal(out, plain.train(image, np.random.default_rng([0, i])))
              for i, out in enumerate(outputs)]
    assert any(differ)
    np.testing.assert_array_equal(augmented.eval(image), plain.eval(image))


@pytest.mark.parametrize("field, value", [("randaugment_num_ops", -1), ("randaugment_magnitude", 21.0),
                                          ("randaugment_magnitude_std", -0.5)])
def test_bad_fields_are_rejected(field, value):
    config = data.default_dataset_config()
    config[field] = value
    with pytest.raises(ValueError, match=f"config.dataset.{field}"):
        data_config.validate(config)
