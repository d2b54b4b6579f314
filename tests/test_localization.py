"""Localisation scores against hand-computed values: IoU, points in boxes with exclusive ends, the maximum and
the thresholded largest region of class maps, the centre baseline."""

import numpy as np
import pytest

from tokenlearner_jax.evaluate import localization


def test_iou_by_hand():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [2, 3, 6, 9]])
    b = np.array([[5, 5, 15, 15], [10, 0, 20, 10], [0, 0, 10, 10], [0, 0, 4, 4]])
    # 25 / (100 + 100 - 25); touching edges share nothing; identical; 2 x 1 / (24 + 16 - 2)
    np.testing.assert_allclose(localization.iou(a, b), [25 / 175, 0.0, 1.0, 2 / 38])
    np.testing.assert_allclose(localization.iou(b, a), localization.iou(a, b))


def test_points_inside_boxes_with_exclusive_ends():
    boxes = np.array([[0, 0, 10, 10]] * 5)
    points = np.array([[0.0, 0.0], [9.99, 9.99], [10.0, 5.0], [5.0, 10.0], [-0.01, 5.0]])
    np.testing.assert_array_equal(localization.contains(boxes, points), [True, True, False, False, False])
    np.testing.assert_allclose(localization.box_centres([[2, 4, 6, 12]]), [[4.0, 8.0]])


def test_the_point_of_a_map_is_its_peak_after_bilinear_upsampling():
    cam = np.zeros((1, 4, 4))
    cam[0, 1, 2] = 1.0
    # Cell (1, 2) of a 4x4 map has its centre at pixel coordinate (6, 10) of a 16x16 image: pixels 5 and 6
    # (rows), 9 and 10 (columns) tie, and the first in row-major order is taken.
    np.testing.assert_allclose(localization.map_points(cam, 16, 16), [[5.5, 9.5]])
    # Without resizing the peak is the cell itself.
    np.testing.assert_allclose(localization.map_points(cam, 4, 4), [[1.5, 2.5]])


def test_the_box_of_a_map_is_its_largest_region_above_the_threshold():
    cam = np.full((1, 6, 6), -1.0)  # range [-1, 1]: 0.2 of it is -0.6
    cam[0, 1, 1:4] = 1.0  # an L of four cells ...
    cam[0, 2, 1] = -0.5  # ... whose corner is above -0.6
    cam[0, 4, 4] = 1.0  # a single bright cell elsewhere
    cam[0, 5, 0] = -0.7  # below the threshold
    np.testing.assert_array_equal(localization.map_boxes(cam, 6, 6), [[1, 1, 3, 4]])
    np.testing.assert_array_equal(localization.map_boxes(np.zeros((1, 3, 3)), 3, 3), [[0, 0, 3, 3]])


def test_centre_box_and_scores():
    centre = localization.centre_boxes(2, 64, 64, 24.0, 20.0)
    np.testing.assert_allclose(centre, [[20, 22, 44, 42]] * 2)
    truth = np.array([[20, 22, 44, 42], [0, 0, 10, 10]])
    scores = localization.scores(truth, points=localization.box_centres(centre), boxes=centre)
    assert scores == pytest.approx({"point_hit": 0.5, "box_hit": 0.5, "mean_iou": 0.5})
    assert localization.scores(truth, points=np.array([[5.0, 5.0], [5.0, 5.0]])) == {"point_hit": 0.5}
