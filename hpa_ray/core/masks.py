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


MAX_SIDE = 10_000  # px: a stated image side above this is refused (HPA images are ≤ 3072)
_MAX_COUNTS = 64 << 20  # bytes: the most RLE counts one mask may inflate to


def _inflate(text: str, height: int, width: int) -> bytes:
    """base64 + zlib → COCO counts, inflated no further than such a mask can need (a zlib bomb
    stops here): ≤ 6 characters per run, ≤ height × width runs, and never over 64 MiB."""
    if not (0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE):
        raise ValueError(f"image size {width}x{height} is outside 1-{MAX_SIDE} px per side")
    limit = min(6 * height * width + 16, _MAX_COUNTS)
    inflater = zlib.decompressobj()
    counts = inflater.decompress(base64.b64decode(text, validate=True), limit)
    if inflater.unconsumed_tail or not inflater.eof:
        raise ValueError(f"inflates past {limit} bytes, more than any {width}x{height} mask needs, or is cut short")
    return counts


def rle_runs(counts: bytes) -> np.ndarray:
    """COCO compressed counts → the run lengths (int64), without decoding the mask.

    Each count is 5-bit groups in characters from 48 ('0'), 0x20 marking that another group
    follows and 0x10 in the last group the sign; from the third count on, each is stored as the
    difference from the count two before it (pycocotools' rleFrString)."""
    if not counts:
        return np.zeros(0, np.int64)
    c = np.frombuffer(counts, np.uint8).astype(np.int64) - 48
    if (c < 0).any() or (c > 63).any():
        raise ValueError("RLE counts hold characters outside the encoding")
    last = (c & 0x20) == 0  # the last group of each count
    if not last[-1]:
        raise ValueError("RLE counts end inside a count")
    ends = np.flatnonzero(last)
    starts = np.concatenate(([0], ends[:-1] + 1))
    group = np.repeat(np.arange(len(ends)), ends - starts + 1)
    shift = 5 * (np.arange(len(c)) - starts[group])
    if shift.max() > 55:
        raise ValueError("an RLE count is too long")
    x = np.bincount(group, weights=(c & 0x1F) << shift, minlength=len(ends)).astype(np.int64)
    negative = (c[ends] & 0x10) != 0
    x[negative] -= 1 << (5 * (ends - starts + 1))[negative]
    runs = x.copy()
    for parity in (0, 1):  # count m > 2 is stored as its difference from count m - 2
        idx = np.arange(2 + parity, len(x), 2) if parity == 0 else np.arange(1, len(x), 2)
        runs[idx] = np.cumsum(x[idx])
    return runs


def check_mask(text: str, height: int, width: int) -> None:
    """Check a submission mask string against its image size without decoding the mask: base64,
    zlib (bounded), COCO counts, every run ≥ 0, and the runs covering exactly height × width.
    Raises ValueError saying what is wrong."""
    try:
        runs = rle_runs(_inflate(text, height, width))
    except (ValueError, zlib.error, base64.binascii.Error) as exc:
        raise ValueError(f"mask does not decode to {height}x{width}: {exc}") from None
    if (runs < 0).any():
        raise ValueError(f"mask does not decode to {height}x{width}: a negative run length")
    if int(runs.sum()) != height * width:
        raise ValueError(f"mask does not decode to {height}x{width}: its runs cover {int(runs.sum())} pixels, "
                         f"not {height * width}")  # fmt: skip


def coco_rle(text: str, height: int, width: int) -> dict:
    """A submission mask string → pycocotools' RLE dict, by the one bounded path every reader of
    a submission takes (`check_mask`: bounded inflation, runs covering exactly height × width).
    Raises ValueError saying what is wrong."""
    check_mask(text, height, width)
    return {"size": [height, width], "counts": _inflate(text, height, width)}


def decode_mask(text: str, height: int, width: int) -> np.ndarray:
    """Decode a submission mask string into a (height, width) uint8 array.

    Raises ValueError when the string is not base64/zlib/RLE or does not fit height × width
    (`coco_rle`).
    """
    rle = coco_rle(text, height, width)
    try:
        return coco_mask.decode(rle)
    except Exception as exc:  # noqa: BLE001 - any decoding failure means the same thing
        raise ValueError(f"mask does not decode to {height}x{width}: {exc}") from exc


def label_image(masks: list[str], height: int, width: int) -> np.ndarray:
    """Submission mask strings → one (height, width) int32 label image, mask k painted k + 1
    (a later mask wins where two overlap). Raises ValueError as `decode_mask` does."""
    labels = np.zeros((height, width), np.int32)
    for k, text in enumerate(masks):
        labels[decode_mask(text, height, width).astype(bool)] = k + 1
    return labels


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
