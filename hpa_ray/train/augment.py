"""Crop augmentation on uint8 arrays: flips and transposes, resizing (shared by cell and bag
training and by prediction's test-time augmentation)."""

from __future__ import annotations

import numpy as np


def augmentation():
    """The augmentation, as albumentations states it: what `flip_batch` computes."""
    import albumentations as A

    return A.Compose([A.Transpose(p=0.5), A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)])


def flip_batch(crops: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """(N, C, S, S) uint8 and (N, 3) bool draws (transpose, horizontal, vertical) → flipped copy.

    Exactly `augmentation()` with those draws (a test compares all 8 cases with albumentations),
    but as views and one copy per crop: 10x faster than one albumentations call per crop
    (measured 9,400 vs 940 crops/s on one core at 260²×4), which made the input path the
    bottleneck.
    """
    out = np.empty_like(crops)
    for i, (transpose, horizontal, vertical) in enumerate(draws):
        view = crops[i]
        if transpose:
            view = view.transpose(0, 2, 1)
        if horizontal:
            view = view[:, :, ::-1]
        if vertical:
            view = view[:, ::-1]
        out[i] = view
    return out


def resize_crops(crops: np.ndarray, size: int) -> np.ndarray:
    """(N, C, S, S) uint8 → (N, C, size, size) uint8 (albumentations' Resize, bilinear)."""
    import albumentations as A

    resize = A.Resize(size, size)
    return np.stack([resize(image=c.transpose(1, 2, 0))["image"].transpose(2, 0, 1) for c in crops])
