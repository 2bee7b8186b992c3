"""Predict end to end: images/s on Ray, and the share of time per step on one core.

Images: the four real 2048² HPA images in ../shared/data/hpa-real, linked N/4 times each under
new IDs. Models: a run of `--folds` fold models (`--model`, random weights: the timing does not
depend on them) trained-run layout, crops of `crop_size` (260 as in training).
1. Steps, in-process and sequential on one core (one torch thread): decode, segment (model
   input, inference, post-processing, upsampling), crop (cutting cells; mask encoding
   subtracted), infer (the ensemble, with flip TTA as configured), encode (the cells' mask RLE
   and the prediction string).
2. `run_predict` on an embedded local Ray over the same images, after a warm-up run of 4 images.

    python bench/bench_predict.py [--images 16] [--model efficientnet-b2] [--folds 3] [--json out.json] [KEY=VALUE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_segment import link_images

from hpa_ray.core.cells import cut_cells, upsample_labels
from hpa_ray.core.config import load_config, write_resolved
from hpa_ray.core.images import list_images, read_image
from hpa_ray.core.masks import encode_strip
from hpa_ray.predict.config import PredictConfig
from hpa_ray.predict.run import Ensemble, load_run, run_predict
from hpa_ray.predict.submission import prediction_string
from hpa_ray.runtime import session
from hpa_ray.segment.backends import build_backend, build_postprocess, build_preprocess
from hpa_ray.segment.config import SegmentConfig
from hpa_ray.train.config import TrainConfig
from hpa_ray.train.model import build_model


def make_run(run_dir: Path, model: str, folds: int, crop_size: int) -> Path:
    for k in range(folds):
        cfg = TrainConfig(model=model, seed=k)
        (run_dir / f"fold-{k}" / "best").mkdir(parents=True)
        torch.save(build_model(cfg).state_dict(), run_dir / f"fold-{k}" / "best" / "model.pt")
        write_resolved(cfg, run_dir / f"fold-{k}" / "config.yaml")
    write_resolved(SegmentConfig(crop_size=crop_size), run_dir / "segment_config.yaml")
    return run_dir


def _encode_seconds(labels: np.ndarray) -> float:
    start = time.perf_counter()
    height, width = labels.shape
    labels_t = np.ascontiguousarray(labels.T)
    for i in range(1, int(labels.max()) + 1):
        xs = np.flatnonzero((labels_t == i).any(axis=1))
        encode_strip(labels_t[xs[0] : xs[-1] + 1] == i, int(xs[0]), height, width)
    return time.perf_counter() - start


def steps(images: Path, run_dir: Path, cfg: PredictConfig) -> dict:
    """Seconds per step, summed over the images, one core."""
    torch.set_num_threads(1)
    run = load_run(run_dir, cfg)
    seg = run.segment
    prep, backend, post = build_preprocess(seg), build_backend(seg), build_postprocess(seg)
    ensemble = Ensemble(json.dumps({"paths": list(run.paths), "train": run.train.model_dump()}), cfg.tta)
    t = dict.fromkeys(("decode", "segment", "crop", "infer", "encode"), 0.0)
    cells = 0
    for job in list_images(images).jobs:
        a = time.perf_counter()
        image = read_image(job["paths"])
        b = time.perf_counter()
        labels = upsample_labels(post(backend.infer([prep(image)])[0]), *image.shape[1:])
        c = time.perf_counter()
        cut = cut_cells(image, labels, seg.crop_size)
        d = time.perf_counter()
        probs = ensemble(cut["crop"], cfg.batch_size)
        e = time.perf_counter()
        prediction_string(cut["mask_rle"], probs, cfg.min_confidence, cfg.top_k)
        f = time.perf_counter()
        encode = _encode_seconds(labels)
        t["decode"] += b - a
        t["segment"] += c - b
        t["crop"] += d - c - encode
        t["infer"] += e - d
        t["encode"] += f - e + encode
        cells += len(cut["cell_id"])
    total = sum(t.values())
    return {"seconds": t, "share": {k: v / total for k, v in t.items()}, "total_s": total, "cells": cells}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--model", default="efficientnet-b2")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--crop-size", type=int, default=260)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("overrides", nargs="*", help="PredictConfig KEY=VALUE")
    args = parser.parse_args()
    cfg = load_config(PredictConfig, None, args.overrides)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run_dir = make_run(tmp / "run", args.model, args.folds, args.crop_size)
        images = link_images(tmp / "images", args.images)
        per_step = steps(images, run_dir, cfg)
        session.init_ray()
        warm = run_predict(link_images(tmp / "warm", 4), run_dir, tmp / "warm.csv", cfg)
        result = run_predict(images, run_dir, tmp / "submission.csv", cfg)
    rate = args.images / result.seconds
    out = {
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs",
        "images": args.images, "image_size": 2048, "model": args.model, "folds": args.folds,
        "crop_size": args.crop_size, "config": cfg.model_dump(), "cells": per_step["cells"],
        "steps_one_core": per_step, "warmup_s": warm.seconds, "ray_s": result.seconds,
        "ray_images_per_s": rate, "sequential_images_per_s": args.images / per_step["total_s"],
        "speedup_vs_one_core": rate * per_step["total_s"] / args.images,
    }  # fmt: skip
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
