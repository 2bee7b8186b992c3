"""Synthetic HPA-like images with known per-cell truth (`python -m hpa_ray.synth`).

Writes the Kaggle layout: DIR/images/{ID}_{red,green,blue,yellow}.png, DIR/labels.csv
(ID,Label) and DIR/truth.parquet (one row per cell: image_id, cell_id, image_height,
image_width, mask_rle, labels). Deterministic for a given seed.
"""

from __future__ import annotations

import math
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from hpa_ray.core.cells import cut_cells
from hpa_ray.core.config import load_config, write_resolved
from hpa_ray.core.schema import CHANNELS, NEGATIVE, NUM_CLASSES, format_labels
from hpa_ray.runtime import cli, console
from hpa_ray.synth.config import SynthConfig
from hpa_ray.synth.patterns import CellGeometry, _texture, paint_green

_R, _G, _B, _Y = (CHANNELS.index(c) for c in ("red", "green", "blue", "yellow"))
# Relative class frequencies for image labels: common and rare classes, as in HPA.
_CLASS_WEIGHTS = np.array([8, 2, 3, 2, 3, 3, 2, 3, 2, 2, 2, 1, 2, 4, 3, 1, 5, 3], float)
_MIN_VISIBLE_AREA = 20000  # px: smaller slivers at the border are dropped (segmenters drop them too)
_MIN_VISIBLE_NUCLEUS = 4000  # px: likewise for cells whose nucleus lies mostly outside
_LOW = 4  # geometry is drawn at 1/_LOW resolution, then upsampled
_RADIUS = (150, 260)  # px: a cell's radius is drawn from this range …
_WAVES = (2, 3)  # … and varies round the cell by waves of these frequencies, …
_WOBBLE = 0.2  # … each of at most this share of the radius
_MAX_RADIUS = _RADIUS[1] * (1 + len(_WAVES) * _WOBBLE)


@dataclass
class SynthImage:
    image: np.ndarray  # (4, H, W) uint8 or uint16, CHANNELS order
    cells: np.ndarray  # (H, W) uint16 cell labels 1..N
    nuclei: np.ndarray  # (H, W) uint16 nucleus labels, same ids as cells
    cell_labels: np.ndarray  # (N, NUM_CLASSES) uint8 multi-hot per cell
    image_labels: np.ndarray  # (NUM_CLASSES,) uint8, union of cell_labels


def _place_centres(size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    centres: list[np.ndarray] = []
    for _ in range(n * 50):
        if len(centres) == n:
            break
        c = rng.uniform(-0.05 * size, 1.05 * size, 2)
        if all(np.hypot(*(c - d)) > 170 for d in centres):
            centres.append(c)
    return np.array(centres).reshape(-1, 2)


def _geometry(size: int, cfg: SynthConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cell and nucleus labels, (size, size) uint16 each, touching neighbours allowed, and
    (size, size) float32 thickness: 1 at a cell's centre falling to 0 at its rim."""
    n = max(1, rng.poisson(cfg.cells_per_megapixel * size * size / 1e6))
    centres = _place_centres(size, n, rng)
    low = size // _LOW
    yy, xx = np.mgrid[0:low, 0:low].astype(np.float32) * _LOW
    warp = (_texture((low, low), 6, rng) - 0.5) * 60  # wobbly shared borders
    best = np.full((low, low), np.inf, np.float32)
    cells = np.zeros((low, low), np.uint16)
    nuclei = np.zeros((low, low), np.uint16)
    thickness = np.zeros((low, low), np.float32)
    for k, (cy, cx) in enumerate(centres, start=1):
        # Only the window that can hold the cell is computed: the same values as over the
        # whole image, 1/8 of the work at 2048² (a cell's radius is at most _MAX_RADIUS).
        win = (_window(cy, low), _window(cx, low))
        dy, dx = yy[win] - cy, xx[win] - cx
        theta = np.arctan2(dy, dx)
        wobble = sum(rng.uniform(0, _WOBBLE) * np.cos(j * theta + rng.uniform(0, 6.3)) for j in _WAVES)
        radius = rng.uniform(*_RADIUS) * (1 + wobble)
        dist = np.hypot(dy, dx) / radius
        mine = (dist < 1) & (dist * 200 + warp[win] < best[win])
        best[win][mine] = (dist * 200 + warp[win])[mine]
        cells[win][mine] = k
        thickness[win][mine] = 1 - dist[mine]
        a, b, ang = rng.uniform(40, 70), rng.uniform(30, 50), rng.uniform(0, np.pi)
        u = (dx * np.cos(ang) + dy * np.sin(ang)) / a
        v = (-dx * np.sin(ang) + dy * np.cos(ang)) / b
        nuclei[win][(u * u + v * v < 1) & (dist < 1)] = k
    nuclei[nuclei != cells] = 0  # a nucleus stays inside its own cell
    thickness = cv2.resize(thickness, (size, size), interpolation=cv2.INTER_LINEAR)
    return _upsample(cells, size), _upsample(nuclei, size), thickness


def _window(centre: float, low: int) -> slice:
    """The rows (or columns) of the 1/_LOW grid within _MAX_RADIUS of `centre` (full-size px)."""
    first = math.floor((centre - _MAX_RADIUS) / _LOW)
    last = math.ceil((centre + _MAX_RADIUS) / _LOW)
    return slice(min(max(first, 0), low), min(max(last + 1, 0), low))


def _upsample(labels: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(labels, (size, size), interpolation=cv2.INTER_NEAREST_EXACT)


def _drop_slivers(cells: np.ndarray, nuclei: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    area = np.bincount(cells.ravel())
    nuc_area = np.bincount(nuclei.ravel(), minlength=area.size)
    keep = (area >= _MIN_VISIBLE_AREA) & (nuc_area[: area.size] >= _MIN_VISIBLE_NUCLEUS)
    keep[0] = False
    ids = np.zeros(area.size, np.uint16)
    ids[keep] = np.arange(1, keep.sum() + 1)
    return ids[cells], ids[nuclei]


def _sample_labels(n_cells: int, cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """(n_cells, NUM_CLASSES) multi-hot per cell, drawn from the image's label set.

    Each cell shows each image label with its class's probability (`class_show_probability`,
    else `show_probability`); every image label is shown by at least one cell. A cell that drew
    none shows one of the image's common labels (those at `show_probability` or above); when the
    image has only variable ones (a mitotic spindle alone), it shows nothing: it is Negative.
    """
    out = np.zeros((n_cells, NUM_CLASSES), np.uint8)
    if n_cells == 0:
        return out
    if rng.random() < cfg.negative_fraction:
        out[:, NEGATIVE] = 1
        return out
    k = int(rng.integers(1, cfg.max_labels + 1))
    classes = rng.choice(NEGATIVE, size=k, replace=False, p=_CLASS_WEIGHTS / _CLASS_WEIGHTS.sum())
    p = np.array([cfg.class_show_probability.get(int(c), cfg.show_probability) for c in classes])
    shows = rng.random((n_cells, k)) < p
    shows[rng.permutation(n_cells)[: min(k, n_cells)], np.arange(min(k, n_cells))] = True
    for i in range(k):  # every image label is shown by at least one cell
        if not shows[:, i].any():
            shows[rng.integers(n_cells), i] = True
    common = np.flatnonzero(p >= cfg.show_probability)
    for row in np.flatnonzero(~shows.any(1)):
        if len(common) == k:  # (kept apart: the same draws as before per-class probabilities existed)
            shows[row, rng.integers(k)] = True
        elif len(common):
            shows[row, rng.choice(common)] = True
    out[:, classes] = shows
    out[~shows.any(1), NEGATIVE] = 1
    return out


def image_labels_of(cell_labels: np.ndarray) -> np.ndarray:
    """(N, 19) per-cell labels → (19,) the image's label: the union of the localisations, or
    Negative when no cell shows any (HPA's Negative excludes the other labels)."""
    if len(cell_labels) == 0:
        return np.eye(NUM_CLASSES, dtype=np.uint8)[NEGATIVE]
    union = cell_labels.max(0)
    if union[:NEGATIVE].any():
        union[NEGATIVE] = 0
    return union


def make_image(size: int, cfg: SynthConfig, rng: np.random.Generator) -> SynthImage:
    """One synthetic image with its per-cell truth."""
    cells, nuclei, thickness = _geometry(size, cfg, rng)
    cells, nuclei = _drop_slivers(cells, nuclei)
    n = int(cells.max())
    cell_labels = _sample_labels(n, cfg, rng)
    img = np.zeros((4, size, size), np.float32)
    inside = cells > 0
    # Microtubules and ER over the cytoplasm, texture per channel; blue fills the nuclei.
    # Cells are thinner, so dimmer, towards their rims: neighbours meet in a valley.
    body = inside * (0.3 + 0.7 * np.sqrt(np.clip(thickness, 0, 1)))
    img[_R] = body * (0.25 + 0.5 * _texture((size, size), 1.5, rng) ** 1.5)
    img[_Y] = body * (0.2 + 0.4 * _texture((size, size), 3, rng))
    img[_B] = (nuclei > 0) * (0.55 + 0.35 * _texture((size, size), 4, rng))
    for k, box in enumerate(ndi.find_objects(cells), start=1):
        if box is None:
            continue
        cell, nuc = cells[box] == k, nuclei[box] == k
        ys, xs = np.nonzero(nuc)
        geom = CellGeometry(box, cell, nuc, (ys.mean(), xs.mean()), float(np.sqrt(nuc.sum() / np.pi)))
        green = paint_green(list(np.flatnonzero(cell_labels[k - 1])), geom, rng)
        img[_G][box] += green * cell
        img[_Y][box] *= 1 + 0.8 * cv2.GaussianBlur(nuc.astype(np.float32), (0, 0), 30)
    img = cv2.GaussianBlur(img.transpose(1, 2, 0), (0, 0), 1.2).transpose(2, 0, 1)
    gain = 0.6 + 0.6 * _texture((size // 16, size // 16), 4, rng)  # uneven illumination
    img *= cv2.resize(gain, (size, size), interpolation=cv2.INTER_LINEAR)[None]
    img += rng.normal(0, cfg.noise, img.shape).astype(np.float32)
    top = 255 if cfg.bit_depth == 8 else 65535
    image = (np.clip(img, 0, 1) * top).astype(np.uint8 if cfg.bit_depth == 8 else np.uint16)
    return SynthImage(image, cells, nuclei, cell_labels, image_labels_of(cell_labels))


def image_ids(n_images: int, seed: int) -> list[str]:
    return [f"synth-{seed:04d}-{i:05d}" for i in range(n_images)]


def _write_one(args: tuple[Path, str, int, SynthConfig, np.random.SeedSequence]) -> tuple[str, str, list[dict]]:
    out, image_id, size, cfg, seq = args
    s = make_image(size, cfg, np.random.default_rng(seq))
    for c, name in enumerate(CHANNELS):
        cv2.imwrite(str(out / "images" / f"{image_id}_{name}.png"), s.image[c])
    cut = cut_cells(np.zeros((1, size, size), np.uint8), s.cells, crop_size=1)
    rows = [
        {
            "image_id": image_id,
            "cell_id": int(cid),
            "image_height": size,
            "image_width": size,
            "mask_rle": rle,
            "labels": s.cell_labels[cid - 1].tolist(),
        }
        for cid, rle in zip(cut["cell_id"], cut["mask_rle"])
    ]
    return image_id, format_labels(s.image_labels), rows


def _exit_with_parent(parent: int) -> None:
    """(Each pool worker's initializer.) A worker whose parent is killed (kill -9, the OOM killer)
    exits within a second: left alone it would wait forever on its task queue, whose pipe it
    holds open itself (forked)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def generate(out: str | Path, n_images: int, seed: int, cfg: SynthConfig, workers: int | None = None) -> Path:
    """Write n_images synthetic images, labels.csv and truth.parquet under `out`."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    seqs = np.random.SeedSequence(seed).spawn(n_images)
    jobs = [(out, i, cfg.size, cfg, s) for i, s in zip(image_ids(n_images, seed), seqs)]
    workers = workers or min(os.cpu_count() or 1, max(1, n_images))
    results: list[tuple[str, str, list[dict]]] = []
    pool = ProcessPoolExecutor(workers, initializer=_exit_with_parent, initargs=(os.getpid(),))
    with pool, console.Progress("synth", n_images, lambda: len(results)):
        results.extend(pool.map(_write_one, jobs))  # in order; the count moves as each arrives
    pd.DataFrame([(i, lab) for i, lab, _ in results], columns=["ID", "Label"]).to_csv(out / "labels.csv", index=False)
    truth = pd.DataFrame([row for *_, rows in results for row in rows])
    truth.to_parquet(out / "truth.parquet", index=False)
    write_resolved(cfg, out / "synth_config.yaml")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = cli.StageParser("hpa_ray.synth", __doc__)
    parser.out("dir", "output directory")
    parser.add_argument("--n-images", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, help="image side in px (overrides the config)")
    parser.config("conf/synth.yaml", "noise=0.05")
    args = parser.parse(argv)
    if args.n_images < 1:
        parser.error("--n-images must be at least 1")
    overrides = list(args.overrides) + ([f"size={args.size}"] if args.size else [])
    return cli.guarded(lambda: _synth_cli(args, overrides))


def _synth_cli(args, overrides: list[str]) -> int:
    cfg = load_config(SynthConfig, args.config, overrides)
    out = generate(args.out, args.n_images, args.seed, cfg)
    print(f"wrote {args.n_images} images ({cfg.size}x{cfg.size}) to {out}/images, labels.csv, truth.parquet")
    return 0
