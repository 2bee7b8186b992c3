"""Green-channel patterns of the 19 localisation classes for synthetic cells.

Each painter draws one class's signal for one cell onto a float32 canvas, using the cell's
geometry. The patterns differ in where they lie (nucleus, rim, cytoplasm) and in their shape
(fill, ring, dots by size and count, fibres), as the real classes do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class CellGeometry:
    """One cell in a synthetic image; masks are full-image (H, W) bool, for its bbox only."""

    box: tuple[slice, slice]  # bounding box of the cell in the image
    cell: np.ndarray  # (h, w) bool over box
    nucleus: np.ndarray  # (h, w) bool over box
    centre: tuple[float, float]  # nucleus centre (y, x) inside the box
    nucleus_radius: float  # mean nucleus radius, px


def _points_in(mask: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return np.zeros((0, 2), int)
    idx = rng.integers(0, ys.size, n)
    return np.stack([ys[idx], xs[idx]], 1)


def _dots(shape, points, radius_range, rng) -> np.ndarray:
    canvas = np.zeros(shape, np.float32)
    for y, x in points:
        r = int(round(rng.uniform(*radius_range)))
        cv2.circle(canvas, (int(x), int(y)), max(r, 1), float(rng.uniform(0.7, 1.0)), -1)
    return canvas


def _ring(mask: np.ndarray, width: int) -> np.ndarray:
    m = mask.astype(np.uint8)
    kernel = np.ones((width, width), np.uint8)
    return (cv2.dilate(m, kernel) - cv2.erode(m, kernel)).astype(np.float32)


def _texture(shape, sigma, rng) -> np.ndarray:
    noise = cv2.GaussianBlur(rng.random(shape, dtype=np.float32), (0, 0), sigma)
    noise -= noise.min()
    return noise / max(float(noise.max()), 1e-6)


def _lines(shape, mask, n, length, thickness, rng, parallel=False) -> np.ndarray:
    canvas = np.zeros(shape, np.float32)
    base = rng.uniform(0, np.pi)
    for y, x in _points_in(mask, n, rng):
        angle = base + rng.normal(0, 0.1) if parallel else rng.uniform(0, np.pi)
        dy, dx = np.sin(angle) * length / 2, np.cos(angle) * length / 2
        p0 = (int(x - dx), int(y - dy))
        p1 = (int(x + dx), int(y + dy))
        cv2.line(canvas, p0, p1, float(rng.uniform(0.6, 1.0)), thickness)
    return canvas


def _cytoplasm(g: CellGeometry) -> np.ndarray:
    return g.cell & ~g.nucleus


def _near_nucleus(g: CellGeometry, reach: float) -> np.ndarray:
    dist = cv2.distanceTransform((~g.nucleus).astype(np.uint8), cv2.DIST_L2, 3)
    return _cytoplasm(g) & (dist < reach)


def _spindle(g: CellGeometry, rng) -> np.ndarray:
    canvas = np.zeros(g.cell.shape, np.float32)
    cy, cx = g.centre
    angle = rng.uniform(0, 180)
    r = g.nucleus_radius
    for sign in (-1, 1):
        tip = (int(cx + sign * r * np.cos(np.radians(angle))), int(cy + sign * r * np.sin(np.radians(angle))))
        cv2.ellipse(canvas, (int(cx), int(cy)), (int(r), int(r * 0.35)), angle, 0, 360, 0.8, -1)
        cv2.circle(canvas, tip, max(int(r * 0.12), 2), 1.0, -1)
    return canvas


def _paint(class_id: int, g: CellGeometry, rng: np.random.Generator) -> np.ndarray:
    shape = g.cell.shape
    nuc, cyto = g.nucleus, _cytoplasm(g)
    r = g.nucleus_radius
    painters: dict[int, Callable[[], np.ndarray]] = {
        0: lambda: nuc * (0.6 + 0.4 * _texture(shape, 3, rng)),
        1: lambda: _ring(nuc, max(int(r * 0.12), 3)) * nuc.any(),
        2: lambda: _dots(shape, _points_in(nuc, rng.integers(2, 4), rng), (r * 0.15, r * 0.22), rng),
        3: lambda: _dots(shape, _points_in(nuc, rng.integers(6, 12), rng), (2, 3), rng),
        4: lambda: _dots(shape, _points_in(nuc, rng.integers(20, 35), rng), (3, 6), rng) * 0.8,
        5: lambda: _dots(shape, _points_in(nuc, rng.integers(2, 6), rng), (4, 6), rng),
        6: lambda: _near_nucleus(g, r * 1.2) * _texture(shape, 2, rng) ** 0.5,
        7: lambda: _dots(shape, _points_in(_near_nucleus(g, r * 0.3), 6, rng), (r * 0.12, r * 0.2), rng),
        8: lambda: _lines(shape, cyto, 10, r * 2.5, 2, rng) * cyto,
        9: lambda: (_lines(shape, cyto, 12, r * 3, 2, rng, parallel=True) + _ring(g.cell, 4)) * g.cell,
        10: lambda: cyto * _texture(shape, 1.5, rng) ** 2,
        11: lambda: _spindle(g, rng),
        12: lambda: _dots(shape, _points_in(_near_nucleus(g, r * 0.15), rng.integers(1, 3), rng), (4, 5), rng),
        13: lambda: _ring(g.cell, max(int(r * 0.1), 3)) * g.cell,
        14: lambda: _lines(shape, cyto, 60, 10, 3, rng) * cyto,
        15: lambda: _dots(shape, _points_in(_near_nucleus(g, r * 0.4), 1, rng), (r * 0.3, r * 0.4), rng),
        16: lambda: cyto * (0.6 + 0.2 * _texture(shape, 4, rng)),
        17: lambda: _dots(shape, _points_in(cyto, rng.integers(40, 70), rng), (2.5, 4), rng) * cyto,
        18: lambda: np.zeros(shape, np.float32),
    }
    return painters[class_id]().astype(np.float32)


def paint_green(classes: list[int], g: CellGeometry, rng: np.random.Generator) -> np.ndarray:
    """Sum of the patterns of `classes` for one cell, each at its own brightness → (h, w)."""
    out = np.zeros(g.cell.shape, np.float32)
    for class_id in classes:
        out += _paint(class_id, g, rng) * rng.uniform(0.5, 1.0)
    return np.minimum(out, 1.0)
