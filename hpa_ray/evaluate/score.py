"""The task's metric: mAP over classes, Open Images instance-segmentation rules (`python -m hpa_ray.evaluate`).

Per class, predictions of all images sorted by confidence (highest first) are matched, each to
the not yet matched true cell of that class in the same image with the highest mask IoU, when
that IoU is >= 0.6; a prediction without such a cell is a false positive (duplicates too).
Equal confidences are ordered by a hash of (image, mask), not by their place in the file: an
answer that gives many cells one confidence (a prior) is not scored by how its rows happen to
be sorted.
AP per class is the area under the precision-recall curve with precision made monotone (Open
Images' `compute_average_precision`); mAP is the mean over the classes that have true cells.
"""

from __future__ import annotations

import json
import sys
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
from pycocotools import mask as coco_mask

from hpa_ray.core import storage
from hpa_ray.core.errors import HpaRayError
from hpa_ray.core.masks import coco_rle
from hpa_ray.core.schema import CLASS_NAMES, NUM_CLASSES
from hpa_ray.predict.submission import SubmissionError, parse_triples, read_submission
from hpa_ray.runtime import cli

IOU_THRESHOLD = 0.6
TRUTH_COLUMNS = ("image_id", "image_height", "image_width", "mask_rle", "labels")


class EvaluateError(HpaRayError, ValueError):
    """Truth or submission that cannot be scored (missing columns, unreadable file)."""


def average_precision(is_tp: np.ndarray, n_true: int) -> float:
    """is_tp: (P,) bool for predictions sorted by confidence, highest first → AP (0 when n_true=0)."""
    if n_true == 0 or len(is_tp) == 0:
        return 0.0
    tp = np.cumsum(is_tp)
    precision = np.concatenate(([0.0], tp / np.arange(1, len(is_tp) + 1), [0.0]))
    recall = np.concatenate(([0.0], tp / n_true, [1.0]))
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone envelope
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def _tie_key(image_id: str, mask: str) -> int:
    return zlib.crc32(f"{image_id} {mask}".encode())


def _image_ious(pred_masks: list[str], true_masks: list[str], height: int, width: int) -> np.ndarray:
    """(P, T) mask IoU between a submission row's distinct masks and the image's true cells."""
    if not pred_masks or not true_masks:
        return np.zeros((len(pred_masks), len(true_masks)))
    preds = [coco_rle(m, height, width) for m in pred_masks]  # bounded: a zlib bomb stops at the mask's size
    truths = [coco_rle(m, height, width) for m in true_masks]
    return np.asarray(coco_mask.iou(preds, truths, [0] * len(truths)), dtype=np.float64).reshape(
        len(preds), len(truths)
    )


def label_ious(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two (H, W) integer label images (cell k is label k, 0 background) → ((P, T) IoU of label
    p + 1 with label t + 1, (P,) and (T,) pixel areas), P and T the largest labels."""
    p = pred.ravel().astype(np.int64)
    t = true.ravel().astype(np.int64)
    n_p, n_t = int(p.max(initial=0)) + 1, int(t.max(initial=0)) + 1
    table = np.bincount(p * n_t + t, minlength=n_p * n_t).reshape(n_p, n_t)
    inter = table[1:, 1:]
    area_p, area_t = table.sum(1)[1:], table.sum(0)[1:]
    return inter / np.maximum(area_p[:, None] + area_t[None, :] - inter, 1), area_p, area_t


def match_cells(pred: np.ndarray, true: np.ndarray, threshold: float = IOU_THRESHOLD) -> tuple[int, int, int]:
    """(matched cells, predicted cells, true cells) for two (H, W) integer label images (0 =
    background): a segmentation scored as the task matches cells, at IoU >= `threshold`.

    At IoU > 0.5 a cell can overlap at most one other that much, so counting pairs is one-to-one.
    """
    iou, area_p, area_t = label_ious(pred, true)
    return int((iou >= threshold).sum()), int((area_p > 0).sum()), int((area_t > 0).sum())


def read_truth(path: str | Path) -> pd.DataFrame:
    """Per-cell truth (synth's truth.parquet): TRUTH_COLUMNS, labels a NUM_CLASSES multi-hot."""
    try:
        truth = storage.read_parquet(path)
    except FileNotFoundError:
        raise EvaluateError(f"truth file {path} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow's many reasons
        raise EvaluateError(f"truth file {path} is not readable Parquet: {exc}") from None
    missing = [c for c in TRUTH_COLUMNS if c not in truth.columns]
    if missing:
        raise EvaluateError(f"truth file {path} lacks column(s) {missing}; found {list(truth.columns)}")
    return truth


def _predictions(submission: pd.DataFrame) -> dict[str, tuple[list, list[str]]]:
    """ID → ([(label, confidence, mask index)], distinct masks)."""
    out = {}
    for i, row in enumerate(submission.itertuples(index=False)):
        try:
            triples = parse_triples(row.PredictionString)
        except ValueError as exc:
            raise SubmissionError(f"row {i + 2} (ID {row.ID!r}): {exc}") from None
        masks: dict[str, int] = {}
        preds = [(int(label), float(conf), masks.setdefault(mask, len(masks)), _tie_key(row.ID, mask))
                 for label, conf, mask in triples]  # fmt: skip
        out[row.ID] = (preds, list(masks))
    return out


def evaluate(submission: pd.DataFrame, truth: pd.DataFrame, iou_threshold: float = IOU_THRESHOLD) -> dict:
    """Score a submission (ID, ImageWidth, ImageHeight, PredictionString) against per-cell truth.

    Returns {"mAP", "per_class_ap" (class name → AP, null without true cells),
    "true_cells" (per class), "predictions", "images", "images_without_rows" (truth images the
    submission lacks), "rows_without_cells" (submission rows with predictions for images with no true
    cell)}; EvaluateError when the truth has no cell or no submission image is in it.
    """
    predictions = _predictions(submission)
    truth = truth.reset_index(drop=True)
    truth_by_image = {k: g for k, g in truth.groupby("image_id", sort=False)}
    if not truth_by_image:
        raise EvaluateError("the truth has no cell: nothing to score against")
    submitted, true_images = set(predictions), set(truth_by_image)
    if submitted and not submitted & true_images:
        raise EvaluateError(f"no image of the submission ({len(predictions)}, e.g. {min(predictions)}) has "
                            f"cells in the truth ({len(truth_by_image)}, e.g. {min(truth_by_image)}): "
                            "the wrong files?")  # fmt: skip
    labels = np.zeros((0, NUM_CLASSES), np.uint8)
    if len(truth):
        labels = np.stack([np.asarray(v, np.uint8) for v in truth["labels"]])
    n_true = labels.sum(axis=0).astype(int)
    # Per class: (confidence, image, prediction's mask index) and per image the IoU matrix.
    scored: dict[int, list] = defaultdict(list)
    ious, true_rows = {}, {}
    for image_id, (preds, masks) in predictions.items():
        cells = truth_by_image.get(image_id)
        rows = cells.index.to_numpy() if cells is not None else np.zeros(0, int)
        if cells is not None and len(cells):
            height, width = int(cells.image_height.iloc[0]), int(cells.image_width.iloc[0])
            try:
                ious[image_id] = _image_ious(masks, list(cells.mask_rle), height, width)
            except ValueError as exc:
                raise SubmissionError(f"ID {image_id!r} (truth size {width}x{height}): {exc}") from None
        else:
            ious[image_id] = np.zeros((len(masks), 0))
        true_rows[image_id] = rows
        for label, conf, mask_index, tie in preds:
            scored[label].append((conf, image_id, mask_index, tie))
    ap = np.full(NUM_CLASSES, np.nan)
    for c in range(NUM_CLASSES):
        if n_true[c]:
            ap[c] = _class_ap(scored[c], c, labels, ious, true_rows, n_true[c], iou_threshold)
    n_preds = sum(len(p) for p, _ in predictions.values())
    return {
        "mAP": float(np.nanmean(ap)) if np.isfinite(ap).any() else 0.0,
        "per_class_ap": {name: (None if np.isnan(v) else float(v)) for name, v in zip(CLASS_NAMES, ap)},
        "true_cells": {name: int(n) for name, n in zip(CLASS_NAMES, n_true)},
        "predictions": int(n_preds),
        "images": len(submitted | true_images),
        "images_without_rows": len(true_images - submitted),  # their cells: all missed
        "rows_without_cells": len({i for i, (p, _) in predictions.items() if p} - true_images),  # all FP
    }


def _class_ap(preds: list, c: int, labels, ious: dict, true_rows: dict, n_true: int, threshold: float) -> float:
    order = sorted(range(len(preds)), key=lambda i: (-preds[i][0], preds[i][3]))
    matched: dict[str, np.ndarray] = {}
    is_tp = np.zeros(len(preds), bool)
    for rank, i in enumerate(order):
        _, image_id, mask_index, _ = preds[i]
        of_class = labels[true_rows[image_id], c].astype(bool)
        free = of_class & ~matched.setdefault(image_id, np.zeros(len(of_class), bool))
        if not free.any():
            continue
        candidates = np.where(free, ious[image_id][mask_index], -1.0)
        best = int(np.argmax(candidates))
        if candidates[best] >= threshold:
            matched[image_id][best] = True
            is_tp[rank] = True
    return average_precision(is_tp, n_true)


def evaluate_files(submission_path: str | Path, truth_path: str | Path) -> dict:
    return evaluate(read_submission(submission_path), read_truth(truth_path))


def main(argv: list[str] | None = None) -> int:
    parser = cli.StageParser("hpa_ray.evaluate", __doc__)
    parser.add_argument("--submission", required=True, help="submission CSV")
    parser.add_argument("--truth", required=True, help="per-cell truth Parquet (synth's truth.parquet)")
    parser.out("file", "also write the JSON here", old=("--output",), required=False)
    args = parser.parse(argv)
    return cli.guarded(lambda: _evaluate_cli(args))


def _evaluate_cli(args) -> int:
    scores = evaluate_files(args.submission, args.truth)
    if scores["images_without_rows"]:
        print(f"warning: {scores['images_without_rows']} image(s) of the truth have no row in {args.submission}: "
              "their cells count as missed", file=sys.stderr)  # fmt: skip
    if scores["rows_without_cells"]:
        print(f"warning: {scores['rows_without_cells']} row(s) of {args.submission} name images with no cell in "
              "the truth: their predictions count as false positives", file=sys.stderr)  # fmt: skip
    text = json.dumps(scores, indent=2)
    if args.out:
        storage.write_text(args.out, text + "\n")
    print(text)
    return 0
