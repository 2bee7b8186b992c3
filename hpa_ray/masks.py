"""Cell masks in the submission's encoding, cut from label images without full-size copies.

The encoding: COCO RLE of the Fortran-ordered uint8 mask (pycocotools' compressed counts),
zlib-compressed, then base64 — what the Kaggle task's PredictionString holds.
"""

from __future__ import annotations

import base64
import zlib

import numpy as np
from pycocotools import mask as coco_mask


def encode_mask(mask: np.ndarray) -> str:
    """Encode a full-image (H, W) bool/uint8 mask. Reference path; cells use `encode_strip`."""
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return base64.b64encode(zlib.compress(rle["counts"])).decode("ascii")


def decode_mask(text: str, height: int, width: int) -> np.ndarray:
    """Decode a submission mask string into a (height, width) uint8 array.

    Raises ValueError when the string is not base64/zlib/RLE or does not fit height × width.
    """
    try:
        counts = zlib.decompress(base64.b64decode(text, validate=True))
        mask = coco_mask.decode({"size": [height, width], "counts": counts})
    except Exception as exc:  # noqa: BLE001 - any decoding failure means the same thing
        raise ValueError(f"mask does not decode to {height}x{width}: {exc}") from exc
    return mask


def encode_strip(strip_t: np.ndarray, x0: int, height: int, width: int) -> str:
    """Encode one cell's mask given only the columns it spans.

    strip_t: (x1 - x0, height) bool, the transposed columns x0..x1 of the cell's mask — in
    column-major order the columns outside the strip are one zero run before and after it,
    so the full (height, width) mask is never built.
    """
    flat = strip_t.reshape(-1)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds)
    if flat[0]:  # COCO counts start with a zero run
        runs = np.concatenate(([0], runs))
    runs[0] += x0 * height
    if flat[-1]:
        runs = np.concatenate((runs, [0]))
    runs[-1] += (width - x0 - strip_t.shape[0]) * height
    if runs[-1] == 0:  # COCO writes no empty trailing run
        runs = runs[:-1]
    rle = coco_mask.frPyObjects({"size": [height, width], "counts": runs.tolist()}, height, width)
    return base64.b64encode(zlib.compress(rle["counts"])).decode("ascii")
