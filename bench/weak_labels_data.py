"""Data for the weak-label experiments (`bench/weak_labels.py`): synthetic train and test sets,
segmented as the demo segments them, each predicted cell matched to its true cell.

    python bench/weak_labels_data.py OUT.npz --seed 11 [--crop 128] [--train 96] [--test 24] [--set SYNTH_KEY=VALUE ...]

The images are the demo's (`SynthConfig` at 2048 px, the same generator and seeds scheme),
segmented with the `classical` backend in-process (the same functions the stage runs) and cut at
`--crop`. Every predicted cell gets its image's weak labels and, when it matches a true cell at
IoU >= 0.6, that cell's true labels (the oracle). The test set's true cells (masks, labels) are
kept to score submissions with `hpa_ray.evaluate`. Nothing here trains.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd

from hpa_ray.core.cells import cut_cells, upsample_labels
from hpa_ray.core.config import load_config
from hpa_ray.core.schema import NUM_CLASSES
from hpa_ray.segment.backends import build_backend, build_postprocess, build_preprocess
from hpa_ray.segment.config import SegmentConfig
from hpa_ray.synth.config import SynthConfig
from hpa_ray.synth.generate import image_ids, make_image

IOU = 0.6


def match_cells(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two (H, W) label images → for each predicted cell 1..P: the true cell (0-based) it matches
    at IoU >= 0.6, or -1, and that IoU."""
    n_pred, n_true = int(pred.max()), int(true.max())
    pairs = np.bincount(pred.ravel().astype(np.int64) * (n_true + 1) + true.ravel(),
                        minlength=(n_pred + 1) * (n_true + 1)).reshape(n_pred + 1, n_true + 1)  # fmt: skip
    inter = pairs[1:, 1:].astype(np.float64)
    union = pairs[1:, :].sum(1)[:, None] + pairs[:, 1:].sum(0)[None, :] - inter
    iou = inter / np.maximum(union, 1)
    best = iou.argmax(1) if n_true else np.zeros(n_pred, int)
    best_iou = iou[np.arange(n_pred), best] if n_true else np.zeros(n_pred)
    return np.where(best_iou >= IOU, best, -1), best_iou


def _one(args) -> dict:
    image_id, cfg, seq, crop = args
    s = make_image(cfg.size, cfg, np.random.default_rng(seq))
    seg = SegmentConfig(crop_size=crop)
    labels = upsample_labels(build_postprocess(seg)(build_backend(seg).infer([build_preprocess(seg)(s.image)])[0]),
                             *s.image.shape[1:])  # fmt: skip
    cut = cut_cells(s.image, labels, crop)
    matched, iou = match_cells(labels, s.cells)
    truth = cut_cells(np.zeros((1, *s.cells.shape), np.uint8), s.cells, 1)
    true_labels = s.cell_labels[np.maximum(matched, 0)] * (matched >= 0)[:, None]
    n = len(cut["cell_id"])
    return {
        "image_id": image_id, "crop": cut["crop"], "weak": np.tile(s.image_labels, (n, 1)),
        "true": true_labels.astype(np.uint8), "matched": matched >= 0, "iou": iou,
        "touches_border": cut["touches_border"], "area": cut["area"], "mask_rle": cut["mask_rle"],
        "truth_rle": truth["mask_rle"], "truth_labels": s.cell_labels, "size": cfg.size,
    }  # fmt: skip


def make_set(n_images: int, seed: int, cfg: SynthConfig, crop: int, workers: int) -> list[dict]:
    """The demo's generator and seeding (`hpa_ray.synth.generate`): the same images for a seed."""
    seqs = np.random.SeedSequence(seed).spawn(n_images)
    jobs = [(i, cfg, s, crop) for i, s in zip(image_ids(n_images, seed), seqs)]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_one, jobs))


def flatten(images: list[dict], prefix: str) -> dict[str, np.ndarray]:
    cells = {k: np.concatenate([im[k] for im in images]) for k in
             ("crop", "weak", "true", "matched", "iou", "touches_border", "area")}  # fmt: skip
    cells["image"] = np.concatenate([np.full(len(im["crop"]), i) for i, im in enumerate(images)])
    cells["mask_rle"] = np.array([r for im in images for r in im["mask_rle"]], object)
    out = {f"{prefix}_{k}": v for k, v in cells.items()}
    out[f"{prefix}_ids"] = np.array([im["image_id"] for im in images])
    truth = pd.DataFrame([{"image_id": im["image_id"], "image_height": im["size"], "image_width": im["size"],
                           "mask_rle": rle, "labels": lab.tolist()}
                          for im in images for rle, lab in zip(im["truth_rle"], im["truth_labels"])])  # fmt: skip
    out[f"{prefix}_truth"] = np.array(truth.to_json(orient="records"), object)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, required=True, help="train seed; the test set uses seed + 1 (as the demo)")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--train", type=int, default=96)
    parser.add_argument("--test", type=int, default=24)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], help="SynthConfig KEY=VALUE")
    args = parser.parse_args()
    cfg = load_config(SynthConfig, None, [f"size={args.size}", *args.overrides])
    start = time.perf_counter()
    workers = os.cpu_count() or 1
    data = {**flatten(make_set(args.train, args.seed, cfg, args.crop, workers), "train"),
            **flatten(make_set(args.test, args.seed + 1, cfg, args.crop, workers), "test")}  # fmt: skip
    data["synth_config"] = np.array(cfg.model_dump_json(), object)
    np.savez(args.out, **data)
    tr, te = data["train_matched"], data["test_matched"]
    print(f"{args.out}: train {len(tr)} cells ({tr.mean():.1%} matched), test {len(te)} cells "
          f"({te.mean():.1%} matched), {NUM_CLASSES} classes, {time.perf_counter() - start:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
