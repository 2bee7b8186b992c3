"""Cut one segmented image into cell rows: bbox, area, mask RLE and a fixed-size crop.

Works on the label image once per image: no per-cell full-size mask, no per-cell re-decode.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import relabel_sequential

from hpa_ray.core.masks import encode_strip


def upsample_labels(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w) int labels at model scale → (height, width) uint16, renumbered 1..N."""
    labels, _, _ = relabel_sequential(labels)
    if labels.max() > np.iinfo(np.uint16).max:
        raise ValueError(f"{labels.max()} cells in one image; at most 65535 are supported")
    labels = labels.astype(np.uint16)
    if labels.shape == (height, width):
        return labels
    return cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)


def crop_cell(image: np.ndarray, cell_mask: np.ndarray, box: tuple[slice, slice], size: int) -> np.ndarray:
    """image (C, H, W) uint8, cell_mask (h, w) bool over `box` → (C, size, size) uint8.

    Pixels outside the cell are zeroed; the box is padded to a square (centred) so the cell
    keeps its aspect ratio, then resized.
    """
    region = image[:, box[0], box[1]] * cell_mask[None]
    _, h, w = region.shape
    side = max(h, w)
    square = np.zeros((side, side, region.shape[0]), np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    square[top : top + h, left : left + w] = region.transpose(1, 2, 0)
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    resized = cv2.resize(square, (size, size), interpolation=interp)
    return np.ascontiguousarray(resized.reshape(size, size, -1).transpose(2, 0, 1))


def cut_cells(image: np.ndarray, labels_full: np.ndarray, crop_size: int) -> dict[str, np.ndarray | list]:
    """image (C, H, W) uint8, labels_full (H, W) uint16 renumbered 1..N → per-cell columns.

    Returns cell_id (N,) int32, bbox (N, 4) int32 [y0, x0, y1, x1), area (N,) int64,
    touches_border (N,) bool, mask_rle list[str], crop (N, C, S, S) uint8.
    """
    _, height, width = image.shape
    n = int(labels_full.max())
    out = {
        "cell_id": np.arange(1, n + 1, dtype=np.int32),
        "bbox": np.zeros((n, 4), np.int32),
        "area": np.bincount(labels_full.ravel(), minlength=n + 1)[1:].astype(np.int64),
        "touches_border": np.zeros(n, bool),
        "mask_rle": [],
        "crop": np.zeros((n, image.shape[0], crop_size, crop_size), np.uint8),
    }
    if n == 0:
        return out
    labels_t = np.ascontiguousarray(labels_full.T)  # column-major view for the RLE strips
    for i, box in enumerate(ndi.find_objects(labels_full)):
        cell_id = i + 1
        y0, y1, x0, x1 = box[0].start, box[0].stop, box[1].start, box[1].stop
        out["bbox"][i] = (y0, x0, y1, x1)
        out["touches_border"][i] = y0 == 0 or x0 == 0 or y1 == height or x1 == width
        out["mask_rle"].append(encode_strip(labels_t[x0:x1] == cell_id, x0, height, width))
        out["crop"][i] = crop_cell(image, labels_full[box] == cell_id, box, crop_size)
    return out
