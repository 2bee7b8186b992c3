"""Segmentation of the same real images at other resolutions: does the working scale follow them?

HPA's four reference images (../shared/data/hpa-real, 2048², HPA's own U-Net masks as truth)
are shrunk to 1024² and 512² (area average; the truth by nearest neighbour), as the 2019
Kaggle set and HPA website downloads are. Each size is segmented with the `classical` backend
with the working scale fixed at `scale` (before) and following the nuclei, for a few values of
`min_working_nucleus_radius` (the default among them).
Recorded per size and mode: F1 of one-to-one cell matching at IoU >= 0.6 (the task's rule,
pooled over the images), the mean IoU of the matched cells (how close the outlines are), the
working scale chosen per image, and the median seconds per image over `--repeats` runs of
preprocess + segment + upsample on one core (the modes take turns going first).

    python bench/seg_resolution.py --out docs/results/seg_resolution.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from hpa_ray.core.cells import upsample_labels
from hpa_ray.segment.backends import build_backend, build_postprocess, build_preprocess
from hpa_ray.segment.backends.nuclei import working_scale
from hpa_ray.segment.config import SegmentConfig
from hpa_ray.segment.sections import ClassicalConfig

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SIDES = (2048, 1024, 512)
# min_working_nucleus_radius (working px) per mode: 0 is the fixed scale of before; 19.5 brings
# every image's nuclei to the size HPA's 2048² ones have at 1/4 (78 px / 4).
MODES = {"fixed scale (before)": 0.0, "nuclei >= 8 px": 8.0, "nuclei >= 10 px (default)": 10.0,
         "nuclei >= 19.5 px": 19.5}  # fmt: skip


def read_real(shared: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(image ID, (4, 2048, 2048) uint8, (2048, 2048) truth labels)] from shared/hpa-real."""
    root = shared / "hpa-real"
    ids = sorted(path.name.split("_")[0] for path in (root / "masks").glob("*_predictedmask.png"))
    read = lambda path: cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # noqa: E731
    return [(i, np.stack([read(root / "images" / f"{i}_{c}.png") for c in ("red", "green", "blue", "yellow")]),
             read(root / "masks" / f"{i}_predictedmask.png")) for i in ids]  # fmt: skip


def shrink(image: np.ndarray, truth: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(4, H, W) uint8 and (H, W) labels → the same at side × side (area / nearest)."""
    if image.shape[1:] == (side, side):
        return image, truth
    small = np.stack([cv2.resize(c, (side, side), interpolation=cv2.INTER_AREA) for c in image])
    return small, cv2.resize(truth.astype(np.int32), (side, side), interpolation=cv2.INTER_NEAREST_EXACT)


def matched_ious(pred: np.ndarray, true: np.ndarray, threshold: float = 0.6) -> tuple[list[float], int, int]:
    """Two (H, W) label images → (IoU of each matched pair (IoU >= threshold), predicted cells,
    true cells); as hpa_ray.evaluate.score.match_cells, keeping the IoUs."""
    p, t = pred.ravel().astype(np.int64), true.ravel().astype(np.int64)
    n_p, n_t = int(p.max()) + 1, int(t.max()) + 1
    table = np.bincount(p * n_t + t, minlength=n_p * n_t).reshape(n_p, n_t)
    inter = table[1:, 1:]
    iou = inter / np.maximum(table.sum(1)[1:, None] + table.sum(0)[None, 1:] - inter, 1)
    return iou[iou >= threshold].tolist(), int((table.sum(1)[1:] > 0).sum()), int((table.sum(0)[1:] > 0).sum())


def segment(cfg: SegmentConfig, image: np.ndarray) -> np.ndarray:
    """(4, H, W) uint8 → (H, W) labels, the stage's three backend steps and upsampling."""
    raw = build_backend(cfg).infer([build_preprocess(cfg)(image)])[0]
    return upsample_labels(build_postprocess(cfg)(raw), *image.shape[1:])


def run(shared: Path, repeats: int) -> dict:
    cv2.setNumThreads(1)  # one core per image, as in the stage's tasks
    real = read_real(shared)
    configs = {mode: SegmentConfig(classical=ClassicalConfig(min_working_nucleus_radius=radius))
               for mode, radius in MODES.items()}  # fmt: skip
    rows = []
    for side in SIDES:
        items = [(i, *shrink(image, truth, side)) for i, image, truth in real]
        seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
        labels: dict[str, list[np.ndarray]] = {}
        for repeat in range(repeats):
            for mode, cfg in list(configs.items())[:: 1 if repeat % 2 else -1]:  # first and last in turn
                start = time.perf_counter()
                labels[mode] = [segment(cfg, image) for _, image, _ in items]
                seconds[mode].append((time.perf_counter() - start) / len(items))
        for mode, cfg in configs.items():
            ious, n_pred, n_true = [], 0, 0
            for pred, (_, _, truth) in zip(labels[mode], items):
                matched, p, t = matched_ious(pred, truth)
                ious, n_pred, n_true = ious + matched, n_pred + p, n_true + t
            rows.append({"side": side, "mode": mode, "f1": 2 * len(ious) / max(n_pred + n_true, 1),
                         "matched": len(ious), "predicted": n_pred, "true": n_true,
                         "mean_iou": float(np.mean(ious)) if ious else 0.0,
                         "working_scale": {i: round(working_scale(image, cfg.classical), 3) for i, image, _ in items},
                         "seconds_per_image": statistics.median(seconds[mode])})  # fmt: skip
            print(
                f"{side:>5}² {mode:<26} F1 {rows[-1]['f1']:.3f}  mean IoU {rows[-1]['mean_iou']:.3f}  "
                f"{rows[-1]['seconds_per_image']:.3f} s/image  scales {sorted(rows[-1]['working_scale'].values())}"
            )
    return {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                       f"opencv {cv2.__version__}",
            "date": time.strftime("%Y-%m-%d"), "repeats": repeats, "rows": rows}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = run(args.shared, args.repeats)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
