"""The whole pipeline on generated data, on an embedded local Ray (`python -m hpa_ray demo`).

Stages so far: synthetic train and test sets → segmentation of both → image-level folds →
every fold trained in parallel (Ray Tune trials of Ray Train runs). Later stages (search,
predict, evaluate) join here as they land.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from hpa_ray.config import FoldsConfig, SegmentConfig, SynthConfig, TrainConfig
from hpa_ray.folds import make_folds, read_label_matrix
from hpa_ray.segment import run_segment, summary_line
from hpa_ray.synth import generate
from hpa_ray.train import train_folds


@dataclass(frozen=True)
class DemoSize:
    train_images: int
    test_images: int
    image_size: int
    crop_size: int
    folds: int
    model: str
    epochs: int


SIZES = {
    "full": DemoSize(48, 12, image_size=1024, crop_size=128, folds=3, model="efficientnet-b2", epochs=3),
    "quick": DemoSize(8, 3, image_size=1024, crop_size=64, folds=2, model="tiny", epochs=2),
}


def _step(name: str) -> float:
    print(f"\n== {name}", flush=True)
    return time.perf_counter()


def run_demo(out: str | Path, seed: int = 0, quick: bool = False) -> dict[str, Path]:
    """Run every stage that exists into `out`; returns where each output lies."""
    out = Path(out)
    size = SIZES["quick" if quick else "full"]
    synth_cfg = SynthConfig(size=size.image_size)
    seg_cfg = SegmentConfig(crop_size=size.crop_size)
    outputs: dict[str, Path] = {}
    _step(f"synthetic data: {size.train_images} train + {size.test_images} test images, {size.image_size} px")
    outputs["train_data"] = generate(out / "data" / "train", size.train_images, seed, synth_cfg)
    outputs["test_data"] = generate(out / "data" / "test", size.test_images, seed + 1, synth_cfg)
    for split in ("train", "test"):
        _step(f"segment {split} images (backend {seg_cfg.backend})")
        labels = outputs[f"{split}_data"] / "labels.csv" if split == "train" else None
        result = run_segment(outputs[f"{split}_data"] / "images", out / "segment" / split, seg_cfg, labels)
        print(summary_line(result))
        outputs[f"{split}_cells"] = out / "segment" / split / "cells"
        outputs[f"{split}_manifest"] = out / "segment" / split / "images.parquet"
    _step(f"folds: {size.folds}, over images")
    ids, y = read_label_matrix(outputs["train_data"] / "labels.csv")
    outputs["folds"] = out / "folds.csv"
    pd.DataFrame({"image_id": ids, "fold": make_folds(y, FoldsConfig(n_folds=size.folds, seed=seed))}).to_csv(
        outputs["folds"], index=False
    )
    _step(f"train {size.folds} folds in parallel: {size.model}, {size.epochs} epochs")
    train_cfg = TrainConfig(model=size.model, epochs=size.epochs, batch_size=32, lr=3e-3 if quick else 1e-3,
                            cpus_per_worker=0.5, patience=size.epochs, seed=seed)  # fmt: skip
    table = train_folds(
        outputs["train_cells"], outputs["folds"], list(range(size.folds)), out / "runs" / "demo", train_cfg
    )
    print(table[["fold", "epoch", "val_loss", "val_map"]].to_string(index=False))
    outputs["models"] = out / "runs" / "demo"
    return outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpa_ray demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/demo", help="output directory (default out/demo)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a few minutes), for tests")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    outputs = run_demo(args.out, args.seed, args.quick)
    print(f"\n== demo finished in {time.perf_counter() - start:.0f} s; outputs:")
    for name, path in outputs.items():
        print(f"  {name:16s} {path}")
    return 0
