"""Test helpers: cell matching at the task's IoU threshold; a page as headless Chromium renders it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest


def chromium_dom(url: str, profile: Path) -> str:
    """The DOM of `url` after headless Chromium has run its scripts (Debian's `chromium`; CI
    installs it, elsewhere the calling test skips)."""
    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium package")
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    return subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip


def loaded_images(dom: str) -> tuple[int, list[str]]:
    """→ (how many <img> the report page has, the tags of those that did not load)."""
    images = re.findall(r"<img [^>]*>", dom)
    return len(images), [tag for tag in images if 'data-state="loaded"' not in tag]


def match_f1(pred: np.ndarray, true: np.ndarray, threshold: float = 0.6) -> tuple[int, int, int]:
    """(true positives, predicted cells, true cells) for two (H, W) label images.

    At IoU >= 0.5 a cell can match at most one other cell, so counting pairs is one-to-one.
    """
    p = pred.ravel().astype(np.int64)
    t = true.ravel().astype(np.int64)
    n_p, n_t = int(p.max()) + 1, int(t.max()) + 1
    table = np.bincount(p * n_t + t, minlength=n_p * n_t).reshape(n_p, n_t)
    inter = table[1:, 1:]
    union = table.sum(1)[1:, None] + table.sum(0)[None, 1:] - inter
    iou = inter / np.maximum(union, 1)
    present_pred = int((table.sum(1)[1:] > 0).sum())
    present_true = int((table.sum(0)[1:] > 0).sum())
    return int((iou >= threshold).sum()), present_pred, present_true


def labels_from_rles(rows, height: int, width: int) -> np.ndarray:
    """Paint decoded masks of (cell_id, mask_rle) rows into one (H, W) int32 label image."""
    from hpa_ray.masks import decode_mask

    out = np.zeros((height, width), np.int32)
    for cell_id, rle in rows:
        out[decode_mask(rle, height, width) > 0] = cell_id
    return out
