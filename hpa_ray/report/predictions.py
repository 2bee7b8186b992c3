"""The report's predictions view (`python -m hpa_ray.report --submission S --images DIR`): what
the model said about each cell, drawn on the test images.

- Each of the first SHOWN_IMAGES predicted images as a red/green/blue composite, every cell
  outlined in the colour of its top class with that class's confidence beside it; with per-cell
  truth (`--truth`, e.g. the demo's truth.parquet), the true cells in the same colours beside it.
- Per class, the GALLERY_CELLS cells most confidently given that class (crops), from the first
  GALLERY_IMAGES predicted images; with truth, each crop says whether its true cell (IoU ≥ 0.6)
  has the class.

The submission's masks are decoded by the bounded reader every submission reader uses
(`hpa_ray.core.masks`). Images the directory lacks, or whose size differs from the submission's, are
left out and named on the page.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpa_ray.core.masks import label_image
from hpa_ray.core.schema import CLASS_NAMES, NUM_CLASSES
from hpa_ray.evaluate.score import IOU_THRESHOLD, label_ious, read_truth
from hpa_ray.predict.submission import parse_triples, read_submission
from hpa_ray.report import figures as figs

SHOWN_IMAGES = 4  # images drawn whole
GALLERY_IMAGES = 12  # images whose cells fill the galleries (each read once, ~24 MB each kept at 2048²)
GALLERY_CELLS = 8  # crops per class


@dataclass
class PredictedImage:
    image_id: str
    image: np.ndarray  # (4, H, W) uint8, CHANNELS order
    cells: np.ndarray  # (H, W) uint16: predicted cell k is k + 1, 0 background
    scores: np.ndarray  # (n_cells, NUM_CLASSES) float32: the confidence given per class, 0 where none
    truth_cells: np.ndarray | None = None  # (H, W) uint16: true cell j is j + 1 (kept for the images drawn)
    truth_labels: np.ndarray | None = None  # (n_true, NUM_CLASSES) uint8 multi-hot
    match: np.ndarray | None = None  # (n_cells,) index of the true cell at IoU ≥ 0.6, -1 for none


def prediction_scores(prediction_string: str) -> tuple[list[str], np.ndarray]:
    """A PredictionString → (distinct masks in order of appearance, (n, NUM_CLASSES) scores)."""
    masks: dict[str, int] = {}
    entries = [(masks.setdefault(mask, len(masks)), int(label), float(conf))
               for label, conf, mask in parse_triples(prediction_string)]  # fmt: skip
    scores = np.zeros((len(masks), NUM_CLASSES), np.float32)
    for k, label, conf in entries:
        scores[k, label] = max(scores[k, label], conf)
    return list(masks), scores


def true_cell_of(cells: np.ndarray, truth_cells: np.ndarray, threshold: float = IOU_THRESHOLD) -> np.ndarray:
    """Label images (H, W) → for each predicted cell the true cell with the highest IoU when it is
    ≥ threshold, else -1. (n_cells,) int."""
    iou, _, _ = label_ious(cells, truth_cells)
    if iou.shape[1] == 0:
        return np.full(len(iou), -1)
    best = iou.argmax(1)
    return np.where(iou[np.arange(len(iou)), best] >= threshold, best, -1)


def read_predictions(submission: str, images_dir: str, truth: str | None = None,
                     limit: int = GALLERY_IMAGES) -> tuple[list[PredictedImage], list[str]]:  # fmt: skip
    """The first `limit` images of the submission that have predictions, read with their cells.
    → (images, notes on images left out)."""
    from hpa_ray.core.images import ImageError, list_images, read_image

    table = read_submission(submission)
    paths = {j["image_id"]: j["paths"] for j in list_images(images_dir).jobs}
    truth_table = read_truth(truth) if truth else None
    shown, notes = [], []
    for row in table[table.PredictionString.str.strip() != ""].itertuples():
        if len(shown) == limit:
            break
        if row.ID not in paths:
            notes.append(f"{row.ID}: no image files in {images_dir}")
            continue
        try:
            image = read_image(paths[row.ID])
        except (ImageError, OSError, ValueError) as exc:
            notes.append(f"{row.ID}: {exc}")
            continue
        height, width = int(row.ImageHeight), int(row.ImageWidth)
        if image.shape[1:] != (height, width):
            size = f"{image.shape[2]}x{image.shape[1]}"
            notes.append(f"{row.ID}: the image is {size}, the submission says {width}x{height}")
            continue
        masks, scores = prediction_scores(row.PredictionString)
        item = PredictedImage(row.ID, image, _compact(label_image(masks, height, width)), scores)
        if truth_table is not None:
            _add_truth(item, truth_table[truth_table.image_id == row.ID], drawn=len(shown) < SHOWN_IMAGES)
        shown.append(item)
    return shown, notes


def _compact(labels: np.ndarray) -> np.ndarray:
    """A label image in half the memory where its cells allow (they always do: < 65,536)."""
    return labels.astype(np.uint16) if labels.max(initial=0) < 1 << 16 else labels


def _add_truth(item: PredictedImage, rows, drawn: bool) -> None:
    height, width = item.cells.shape
    truth_cells = _compact(label_image(list(rows.mask_rle), height, width))
    item.truth_labels = np.asarray([np.asarray(v, np.uint8) for v in rows.labels]).reshape(len(rows), NUM_CLASSES)
    item.match = true_cell_of(item.cells, truth_cells)
    item.truth_cells = truth_cells if drawn else None


def predictions_view(submission: str, images_dir: str, out: Path, truth: str | None = None):
    """→ (figures [(PNG, caption)], HTML) of the predictions view, the PNGs written to out."""
    images, notes = read_predictions(submission, images_dir, truth)
    if not images and not notes:  # every row with predictions is drawn or noted
        raise ValueError(
            f"--submission {submission} predicts no cell (no row with a PredictionString): nothing to draw"
        )
    if not images:
        raise ValueError(f"--submission {submission}: none of its predicted images was found in {images_dir} "
                         f"({notes[0]})")  # fmt: skip
    figures = []
    for item in images[:SHOWN_IMAGES]:
        true = (item.truth_cells, item.truth_labels) if item.truth_cells is not None else None
        path = figs.predicted_image(item.image, item.cells, item.scores, item.image_id,
                                    out / f"predicted_{len(figures)}.png", true)  # fmt: skip
        beside = " Left: the true cells, outlined in the colour of their first true class." if true else ""
        figures.append((path, f"{item.image_id}: {len(item.scores)} cells, each outlined in the colour of its top "
                              f"class with that class's confidence beside it.{beside}"))  # fmt: skip
    gallery = figs.class_gallery(gallery_rows(images), out / "predicted_cells.png")
    marked = " Green ✓: its true cell has the class; red ✗: it has not, or no true cell matches." if truth else ""
    figures.append((gallery, f"Per class, the {GALLERY_CELLS} cells most confidently given it, from the first "
                             f"{len(images)} predicted images, with the confidence.{marked}"))  # fmt: skip
    return figures, _summary(images, notes)


def gallery_rows(images: list[PredictedImage], per_class: int = GALLERY_CELLS) -> dict:
    """→ class → [(crop (4, S, S) uint8, caption, right: bool or None without truth)], the most
    confident cells first, for every class some cell was given."""
    from scipy import ndimage

    boxes = [ndimage.find_objects(item.cells, max_label=len(item.scores)) for item in images]
    rows = {}
    for c in range(NUM_CLASSES):
        ranked = sorted(((item.scores[k, c], i, k) for i, item in enumerate(images)
                         for k in np.flatnonzero(item.scores[:, c] > 0)), reverse=True)[:per_class]  # fmt: skip
        if ranked:
            rows[c] = [_crop(images[i], k, boxes[i][k], c, score) for score, i, k in ranked]
    return rows


def _crop(item: PredictedImage, k: int, box: tuple[slice, slice] | None, c: int, score: float):
    """Cell k's square crop (a margin around it, the rest of the field dimmed), its caption and
    whether its true cell has class c (None without truth)."""
    height, width = item.cells.shape
    box = box or (slice(0, 1), slice(0, 1))  # a mask wholly painted over by later ones
    cy, cx = (box[0].start + box[0].stop) // 2, (box[1].start + box[1].stop) // 2
    half = int(0.6 * max(box[0].stop - box[0].start, box[1].stop - box[1].start)) + 2
    ys, xs = slice(max(0, cy - half), min(height, cy + half)), slice(max(0, cx - half), min(width, cx + half))
    crop = item.image[:, ys, xs].copy()
    crop[:, item.cells[ys, xs] != k + 1] //= 3
    if item.match is None:
        return crop, f"{score:.2f}", None
    j = item.match[k]
    right = bool(j >= 0 and item.truth_labels[j, c])
    return crop, f"{score:.2f} {'✓' if right else '✗'}", right


def _summary(images: list[PredictedImage], notes: list[str]) -> str:
    top = np.concatenate([item.scores.argmax(1) for item in images])
    counts = np.bincount(top, minlength=NUM_CLASSES)
    rows = "".join(f"<tr><td>{c} {html.escape(CLASS_NAMES[c])}</td><td>{counts[c]}</td></tr>"
                   for c in np.argsort(-counts, kind="stable") if counts[c])  # fmt: skip
    text = (f"<p>{len(images)} predicted images read, {len(top)} cells.</p><table><tr><th>top class</th>"
            f"<th>cells</th></tr>{rows}</table>")  # fmt: skip
    if notes:
        items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
        text += f"<p>Left out:</p><ul>{items}</ul>"
    return text
