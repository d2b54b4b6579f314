"""Weakly-supervised localisation scores: a predicted point or box against the true box of the object.

Boxes are (top, left, bottom, right) in pixels with the ends exclusive (data/canvas_digits.py), as float
or int arrays `[n, 4]`; points are (y, x) in continuous pixel coordinates, pixel (i, j) covering
[i, i + 1) x [j, j + 1), so its centre is (i + 0.5, j + 0.5).

- A point hits when it lies inside the true box; a box hits when its IoU with the true box is at least 0.5
  (the usual CorLoc criterion).
- From a class map (CAM, `[rows, cols]` over the image): the point is the centre of the pixel of the
  highest value of the map upsampled bilinearly to the image; the box is the tight box of the largest
  4-connected region where that upsampled map, rescaled to [0, 1] by its minimum and maximum, is at
  least `threshold` (CAM's recipe, Zhou et al. arXiv 1512.04150, uses 0.2 of the maximum).
- The centre baseline: the image centre, and a box of a given size centred on the image.
"""

import jax
import numpy as np
import scipy.ndimage


def iou(boxes_a, boxes_b) -> np.ndarray:
    """Intersection over union of matching boxes `[n, 4]` -> float64 `[n]`."""
    a, b = np.asarray(boxes_a, np.float64), np.asarray(boxes_b, np.float64)
    height = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0.0, None)
    width = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0.0, None)
    inter = height * width
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
    return inter / (area(a) + area(b) - inter)


def contains(boxes, points) -> np.ndarray:
    """bool `[n]`: point i `[n, 2]` (y, x) lies inside box i `[n, 4]`."""
    boxes, points = np.asarray(boxes, np.float64), np.asarray(points, np.float64)
    return ((boxes[:, 0] <= points[:, 0]) & (points[:, 0] < boxes[:, 2]) & (boxes[:, 1] <= points[:, 1])
            & (points[:, 1] < boxes[:, 3]))


def box_centres(boxes) -> np.ndarray:
    """`[n, 4]` -> float64 `[n, 2]` (y, x) centres."""
    boxes = np.asarray(boxes, np.float64)
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)


def upsample(maps, height: int, width: int) -> np.ndarray:
    """Class maps `[n, rows, cols]` -> float64 `[n, height, width]`, bilinear (half-pixel centres)."""
    maps = np.asarray(maps, np.float32)
    resized = jax.image.resize(maps, (maps.shape[0], height, width), "bilinear")
    return np.asarray(resized, np.float64)


def map_points(maps, height: int, width: int) -> np.ndarray:
    """float64 `[n, 2]`: the centre of the pixel of each upsampled map's maximum (the first, row-major)."""
    upsampled = upsample(maps, height, width)
    flat = upsampled.reshape(len(upsampled), -1).argmax(axis=1)
    rows, cols = np.divmod(flat, width)
    return np.stack([rows + 0.5, cols + 0.5], axis=1)


def map_boxes(maps, height: int, width: int, threshold: float = 0.2) -> np.ndarray:
    """int64 `[n, 4]`: the tight box of the largest 4-connected region of each upsampled map at or above
    `threshold` after rescaling it to [0, 1] (a constant map gives the whole image)."""
    boxes = []
    for m in upsample(maps, height, width):
        span = m.max() - m.min()
        mask = (m - m.min()) >= threshold * span if span > 0 else np.ones_like(m, bool)
        labels, count = scipy.ndimage.label(mask)
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        sizes[0] = 0  # the background
        rows, cols = np.nonzero(labels == sizes.argmax())
        boxes.append([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1])
    return np.asarray(boxes, np.int64)


def centre_boxes(count: int, height: int, width: int, box_height: float, box_width: float) -> np.ndarray:
    """float64 `[count, 4]`: a box_height x box_width box centred on a height x width image."""
    top, left = (height - box_height) / 2, (width - box_width) / 2
    return np.tile([top, left, top + box_height, left + box_width], (count, 1)).astype(np.float64)


def scores(true_boxes, points=None, boxes=None) -> dict:
    """{'point_hit': fraction of points in their true box, 'box_hit': fraction of boxes with IoU >= 0.5,
    'mean_iou': mean IoU}, for whichever of points `[n, 2]` and boxes `[n, 4]` is given."""
    out = {}
    if points is not None:
        out["point_hit"] = float(contains(true_boxes, points).mean())
    if boxes is not None:
        overlaps = iou(boxes, true_boxes)
        out["box_hit"] = float((overlaps >= 0.5).mean())
        out["mean_iou"] = float(overlaps.mean())
    return out
