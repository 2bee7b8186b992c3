"""The typical size of an image's nuclei, and the working resolution that follows it.

Backends segment at `scale` of the image (1/4 for HPA's 2048² images, whose nuclei have a
radius of ~78 px). An image whose nuclei are smaller (a 512² or 1024² image: the 2019 Kaggle
set, HPA website downloads) would lose its outlines at that scale; with `scale_follows_nuclei`
it is segmented finer, up to full resolution, so that its nuclei span as many working pixels
as the parameters were made for.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage import filters

from hpa_ray.core.schema import CHANNELS
from hpa_ray.segment.backends.common import downscale

_B = CHANNELS.index("blue")
_MIN_BLUE = 0.02  # a blue channel peaking below this (0..1) has no nuclei to measure
# Finer scales are multiples of this: images of like nuclei get one size, and the hpa backend
# runs one forward pass per size in a batch (a 2048² image's sizes are multiples of 128 px).
_STEP = 1 / 16


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigmaX=max(sigma, 0.1))


def per_label(statistic, values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """statistic: ndi.maximum / ndi.median; values, labels: (h, w) → (labels.max(),) the
    statistic of `values` over each label 1..n; NaN for a label with no pixel (labels after
    `drop_small` have gaps; scipy would return an arbitrary value). Only labelled pixels are
    passed: scipy sorts all it is given, and the background is most of an image."""
    inside = labels > 0
    out = np.asarray(statistic(values[inside], labels[inside], np.arange(1, labels.max() + 1)), np.float64)
    out[np.bincount(labels[inside], minlength=labels.max() + 1)[1:] == 0] = np.nan
    return out


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """(n,) values, (n,) weights → the value at half the total weight, counted from the smallest."""
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """(h, w) bool → the same with every background region not reaching the border filled, as
    `scipy.ndimage.binary_fill_holes` (4-connected background) does, by a flood fill from
    outside: ~5× faster."""
    outside = np.pad(~mask, 1, constant_values=True).view(np.uint8)
    cv2.floodFill(outside, None, (0, 0), 2, flags=4)
    return outside[1:-1, 1:-1] != 2


def nucleus_radius(blue: np.ndarray, scale: float) -> tuple[float, int]:
    """blue: (h, w) float32 in [0, 1] at `scale` of the full resolution → (typical nucleus
    radius in full-resolution px, number of blue objects measured; 0 when there are none).

    The radius of an object is the peak of its distance map (touching nuclei keep their own
    radius); the typical one is the area-weighted median, so specks of noise do not count.
    """
    smooth = blur(blue, 2.0)
    if smooth.max() <= smooth.min():
        return 0.0, 0
    mask = fill_holes(smooth > filters.threshold_otsu(smooth))
    objects, n = ndi.label(mask)
    if n == 0:
        return 0.0, 0
    # OpenCV's exact Euclidean distance: scipy's EDT gives the same, 4× slower.
    distance = cv2.distanceTransform(mask.view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    peaks = per_label(ndi.maximum, distance, objects)
    return weighted_median(peaks, np.bincount(objects.ravel())[1:]) / scale, n


def working_scale(image: np.ndarray, p) -> float:
    """image: (4, H, W) uint8, channels in CHANNELS order; p: a backend section with `scale`
    and `min_working_nucleus_radius` → the fraction of full resolution to segment this image at
    (see `_follow_nuclei`)."""
    return _follow_nuclei(image, downscale(image[_B : _B + 1], p.scale)[0], p)


def _follow_nuclei(image: np.ndarray, blue: np.ndarray, p) -> float:
    """image: (4, H, W) uint8; blue: (h, w) uint8, its blue channel at `p.scale` → `p.scale`,
    unless the typical nucleus radius r (full-resolution px) would span fewer working pixels
    than `p.min_working_nucleus_radius` (m): then m / r rounded up to a multiple of 1/16, at
    most 1 (a 512² image, r ≈ 20 px: 1/2). Small nuclei are measured again at the scale the
    first estimate gives: at `p.scale` a 512² image's nuclei are ~5 px and read 10-20 % large."""
    least = p.min_working_nucleus_radius
    if least <= 0 or p.scale >= 1:
        return p.scale
    scale = p.scale
    for _ in range(2):
        if blue.max() < _MIN_BLUE * 255:
            return p.scale
        radius, n = nucleus_radius(blue.astype(np.float32) / 255, scale)
        if n == 0 or radius * p.scale >= least:
            return p.scale
        finer = float(min(1.0, math.ceil(least / max(radius, 1.0) / _STEP) * _STEP))
        if scale != p.scale:
            return finer
        scale = finer
        blue = downscale(image[_B : _B + 1], scale)[0]
    return scale


def to_working_scale(image: np.ndarray, p) -> np.ndarray:
    """(4, H, W) uint8 → (4, h, w) uint8 at the image's working scale (area average): the image
    at `p.scale` (its nuclei measured there), or again from full resolution when they are small."""
    at_scale = downscale(image, p.scale)
    scale = _follow_nuclei(image, at_scale[_B], p)
    return at_scale if scale == p.scale else downscale(image, scale)
