"""Average precision over classes (validation: cells scored against their weak labels)."""

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


def macro_ap(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean of the per-class APs that are defined; 0.0 when none is."""
    ap = per_class_ap(labels, scores)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else 0.0
