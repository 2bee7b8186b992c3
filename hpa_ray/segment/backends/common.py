"""What the backends share: their error, array helpers."""

from __future__ import annotations

import cv2
import numpy as np

from hpa_ray.core.errors import HpaRayError


class BackendError(HpaRayError, RuntimeError):
    """The backend cannot start (missing files or packages, wrong checksum)."""


def downscale(image: np.ndarray, scale: float) -> np.ndarray:
    """(C, H, W) uint8 → (C, h, w) uint8, h = round(H * scale) (area average)."""
    if scale == 1:
        return image
    _, height, width = image.shape
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.stack([cv2.resize(ch, size, interpolation=cv2.INTER_AREA) for ch in image])


def drop_small(labels: np.ndarray, min_area: float) -> np.ndarray:
    """Zero the labels of objects with fewer than `min_area` pixels; (h, w) int in and out."""
    sizes = np.bincount(labels.ravel())
    small = sizes < min_area
    small[0] = False
    if small.any():
        labels = labels.copy()
        labels[small[labels]] = 0
    return labels
