"""Canvas digits: deterministic generation, boxes that are the digit's tight box, split sizes and labels,
and the input pipeline reading the canvases in the order of `boxes`."""

import ml_collections
import numpy as np
import pytest

from tokenlearner_jax import data
from tokenlearner_jax.data import canvas_digits, digits


def test_a_canvas_without_clutter_has_the_box_of_its_non_zero_pixels():
    images, _ = digits.load_split_arrays()["test"]
    sources = digits.load_split_arrays()["train"][0]
    for index in range(20):
        canvas, box = canvas_digits.make_canvas(images[index], sources, np.random.default_rng(index),
                                                num_fragments=(0, 0))
        rows = np.flatnonzero(canvas.max(axis=(1, 2)) > 0)
        cols = np.flatnonzero(canvas.max(axis=(0, 2)) > 0)
        np.testing.assert_array_equal(box, [rows[0], cols[0], rows[-1] + 1, cols[-1] + 1])
        assert box[2] - box[0] <= canvas_digits.DIGIT_SIDES[1] and box[3] - box[1] <= canvas_digits.DIGIT_SIDES[1]


def test_clutter_never_hides_the_digit():
    image = digits.load_split_arrays()["test"][0][3]
    sources = digits.load_split_arrays()["train"][0]
    # The digit's side and place are drawn before the clutter, so the same seed places it identically.
    clean, box = canvas_digits.make_canvas(image, sources, np.random.default_rng(5), num_fragments=(0, 0))
    cluttered, same_box = canvas_digits.make_canvas(image, sources, np.random.default_rng(5), num_fragments=(6, 6))
    np.testing.assert_array_equal(box, same_box)
    assert (cluttered >= clean).all()  # maximum compositing
    assert 0 < (cluttered > clean).any(axis=-1).sum() <= 6 * canvas_digits.FRAGMENT ** 2


def test_generation_is_deterministic_and_seeded_by_split_image_and_copy():
    train, test = (canvas_digits.load_split_arrays()[s] for s in ("train", "test"))
    sources = digits.load_split_arrays()["train"][0]
    index, copy = 17, 2
    canvas, box = canvas_digits.make_canvas(digits.load_split_arrays()["test"][0][index], sources,
                                            np.random.default_rng([1, index, copy]))
    element = index * canvas_digits.COPIES + copy
    np.testing.assert_array_equal(test[0][element], canvas)
    np.testing.assert_array_equal(test[2][element], box)
    assert not np.array_equal(test[0][element], test[0][element + 1])  # another copy, another draw
    assert not np.array_equal(train[0][element], test[0][element])


def test_split_sizes_labels_and_boxes():
    for split, count in (("train", 1437), ("test", 360)):
        images, labels, boxes = canvas_digits.load_split_arrays()[split]
        assert images.shape == (count * 4, 64, 64, 3) and images.dtype == np.uint8
        np.testing.assert_array_equal(labels, np.repeat(digits.load_split_arrays()[split][1], 4))
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 64).all() and (boxes[:, 2:] > boxes[:, :2]).all()
        np.testing.assert_array_equal(canvas_digits.boxes(split), boxes)
        # Every box holds ink; the digit is the brightest thing in its box.
        assert all(images[i, b[0]:b[2], b[1]:b[3]].max() > 0 for i, b in enumerate(boxes[:50]))
    with pytest.raises(ValueError, match="not 'validation'"):
        canvas_digits.boxes("validation")


def test_the_eval_pipeline_reads_the_canvases_in_the_order_of_the_boxes():
    config = data.default_dataset_config()
    config.update(name="canvas_digits", image_size=64, augment="none", normalize="unit")
    info = data.get_info(config)
    assert (info.num_train, info.num_eval, info.num_classes) == (5748, 1440, 10)
    batch = next(iter(data.eval_batches(config, global_batch_size=8)))
    images, labels, _ = canvas_digits.load_split_arrays()["test"]
    np.testing.assert_allclose(batch["image"], images[:8] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(batch["label"], labels[:8])
    assert canvas_digits.build(ml_collections.ConfigDict()).split("test")[5]["box"].shape == (4,)


def test_boxes_scale_with_the_image_size():
    np.testing.assert_allclose(canvas_digits.scale_boxes(np.array([[8, 16, 40, 64]]), 32), [[4, 8, 20, 32]])
