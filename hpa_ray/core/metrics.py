"""Average precision over classes (validation: cells scored against their weak labels), and
image-level scores from cell scores."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score


def per_class_ap(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """labels, scores: (N, C) → (C,) AP per class; NaN where a class has no positive or no negative."""
    ap = np.full(labels.shape[1], np.nan)
    for c in range(labels.shape[1]):
        positives = labels[:, c].sum()
        if 0 < positives < len(labels):
            ap[c] = average_precision_score(labels[:, c], scores[:, c])
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
