"""Average precision per class and its mean over classes (mAP), over a whole evaluation split.

AP of one class is the area under its precision-recall curve taken as a step function, with no
interpolation: sort the examples by score (highest first), treat tied scores as one threshold, and
sum precision x (recall gained) over the thresholds, AP = sum_k (R_k - R_{k-1}) P_k. This is
scikit-learn's `average_precision_score`; mAP is its macro average over the classes that have at least
one positive example in the split (a class without positives has no recall to gain and is excluded,
and counted). Computed in NumPy float64 on the host from every example's scores.
"""

import numpy as np


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """AP of one class: scores `[n]` (higher = more confident), positives `[n]` (bool or 0/1).
    NaN when there is no positive example."""
    scores, positives = np.asarray(scores, np.float64), np.asarray(positives) > 0
    total = int(positives.sum())
    if total == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    scores, positives = scores[order], positives[order]
    last_of_threshold = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # the end of each run of ties
    true_positives = np.cumsum(positives)[last_of_threshold]
    predicted = last_of_threshold + 1
    precision = true_positives / predicted
    recall = true_positives / total
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(scores: np.ndarray, labels: np.ndarray):
    """(mAP over the classes with positives, per-class AP `[classes]` (NaN without positives), the number
    of classes without positives) for scores and multi-hot labels `[examples, classes]`."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.shape != labels.shape or scores.ndim != 2:
        raise ValueError(f"expected scores and labels of the same shape [examples, classes], got {scores.shape} "
                         f"and {labels.shape}")
    per_class = np.array([average_precision(scores[:, c], labels[:, c]) for c in range(scores.shape[1])])
    with_positives = ~np.isnan(per_class)
    mean = float(per_class[with_positives].mean()) if with_positives.any() else float("nan")
    return mean, per_class, int((~with_positives).sum())
