"""Average precision over classes (validation: cells scored against their weak labels), and
image-level scores from cell scores."""

from __future__ import annotations

import numpy as np


def binary_ap(labels: np.ndarray, scores: np.ndarray) -> float:
    """(N,) 0/1 labels with at least one positive, (N,) scores → AP: the sum over the distinct
    scores, highest first, of (recall gained) × precision there; tied scores are one threshold.
    The same number as scikit-learn's `average_precision_score`, without importing scikit-learn
    (0.8 s in every training worker and predict task that would). NaN when a score is not
    finite (a diverged model): no ranking, and no best epoch made of it."""
    if not np.isfinite(scores).all():
        return float("nan")
    order = np.argsort(scores, kind="mergesort")[::-1]
    ranked, hits = np.asarray(scores, np.float64)[order], np.asarray(labels)[order] > 0
    last_of_tie = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]
    true_pos = np.cumsum(hits)[last_of_tie]
    precision = true_pos / (last_of_tie + 1)
    recall_gain = np.diff(true_pos, prepend=0) / true_pos[-1]
    return float(np.sum(recall_gain * precision))


def per_class_ap(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """labels, scores: (N, C) → (C,) AP per class; NaN where a class has no positive or no negative."""
    ap = np.full(labels.shape[1], np.nan)
    for c in range(labels.shape[1]):
        positives = labels[:, c].sum()
        if 0 < positives < len(labels):
            ap[c] = binary_ap(labels[:, c], scores[:, c])
    return ap


def mean_ap(ap: np.ndarray) -> float:
    """(C,) per-class APs → the mean of those that are defined; 0.0 when none is."""
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else 0.0


def macro_ap(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean of the per-class APs that are defined; 0.0 when none is."""
    return mean_ap(per_class_ap(labels, scores))


def max_by_image(cell: np.ndarray, image_of: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Cell models have no image head: an image's score for a class is its most confident cell's.
    cell (N, C), image_of (N,) image keys (None: all one image) → (G, C) per image, in sorted key
    order, and (N,) each cell's row in it."""
    rows = np.zeros(len(cell), int) if image_of is None else np.unique(image_of, return_inverse=True)[1]
    image = np.zeros((rows.max() + 1 if len(rows) else 0, cell.shape[1]), cell.dtype)
    np.maximum.at(image, rows, cell)
    return image, rows
