"""GPU training throughput: a fold trained end to end on Ray Train vs the bare model step.

Both on the same GPU, same model, batch size and precision (bf16 autocast on CUDA,
channels-last on CUDA and CPU, as `train` does):
  - bare step: normalise + forward + BCE + backward + Adam step on crops already on the GPU;
  - end to end: `hpa_ray.train.fit.fit_fold` on a cells Parquet of synthetic 4×S×S crops written
    in the project's schema (Ray Data read → fold split → flips → uint8 batches → device), its
    reported `train_images_per_s` (the training loop's rate, data input included; the first
    epoch, which compiles kernels and starts the readers, is left out).
The goal is end to end >= 90% of the bare step. Without a GPU (`--device cpu`) it runs the same
code on the CPU: a check that the script works, not a figure to record.

    python bench/gpu_train.py [--cells 8192] [--batch 128] [--model efficientnet-b2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from hpa_ray.core.config import write_resolved
from hpa_ray.core.schema import CHANNELS, cells_table
from hpa_ray.runtime import session
from hpa_ray.segment.config import SegmentConfig
from hpa_ray.train.backbones import normalisation
from hpa_ray.train.config import TrainConfig
from hpa_ray.train.data import normalise
from hpa_ray.train.fit import fit_fold
from hpa_ray.train.model import build_model

CELLS_PER_IMAGE = 16


def write_cells(out: Path, n_cells: int, size: int) -> tuple[Path, Path]:
    """n_cells random crops in the cells schema, 16 per image, 64 images per Parquet file."""
    rng = np.random.default_rng(0)
    cells_dir = out / "cells"
    cells_dir.mkdir(parents=True)
    n_images = -(-n_cells // CELLS_PER_IMAGE)
    ids = [f"img{i:05d}" for i in range(n_images)]
    tables = []
    for i, image_id in enumerate(ids):
        n = CELLS_PER_IMAGE
        cut = {"cell_id": np.arange(1, n + 1, dtype=np.int32), "bbox": np.zeros((n, 4), np.int32),
               "area": np.full(n, 1000, np.int64), "touches_border": np.zeros(n, bool), "mask_rle": [""] * n,
               "crop": rng.integers(0, 255, (n, len(CHANNELS), size, size), dtype=np.uint8)}  # fmt: skip
        tables.append(cells_table(image_id, 2048, 2048, cut, str(i % 19)))
        if len(tables) == 64 or i == n_images - 1:
            pq.write_table(pa.concat_tables(tables), cells_dir / f"part-{i:05d}.parquet")
            tables = []
    folds = out / "folds.csv"
    pd.DataFrame({"image_id": ids, "fold": [i % 5 for i in range(n_images)]}).to_csv(folds, index=False)
    write_resolved(SegmentConfig(crop_size=size), out / "segment_config.yaml")  # what fit_fold asks of cells
    return cells_dir, folds


def bare_step_rate(cfg: TrainConfig, size: int, device: torch.device, steps: int = 20) -> float:
    """Images/s of the training step alone, inputs already on the device."""
    amp = device.type == "cuda"  # bf16 there, as fit_fold's `mixed_precision: auto`
    model = build_model(cfg).to(device).to(memory_format=torch.channels_last)  # as fit_fold, CPU or GPU
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    if cfg.compile:
        model = torch.compile(model)  # compiled in the warm-up steps, as in fit_fold's first epoch
    mean, std = normalisation(cfg.model, device)
    crops = torch.randint(0, 255, (cfg.batch_size, len(CHANNELS), size, size), dtype=torch.uint8, device=device)
    labels = (torch.rand(cfg.batch_size, 19, device=device) < 0.1).float()
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step():
        x = normalise(crops, mean, std).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model(x).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(5):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * cfg.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=8192)
    parser.add_argument("--size", type=int, default=260, help="crop side")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--model", default="efficientnet-b2")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    cfg = TrainConfig(model=args.model, batch_size=args.batch, epochs=args.epochs, patience=args.epochs,
                      use_gpu=gpu, cpus_per_worker=1.0 if gpu else 0.5)  # fmt: skip
    bare = bare_step_rate(cfg, args.size, device)
    with tempfile.TemporaryDirectory() as tmp:
        cells, folds = write_cells(Path(tmp), args.cells, args.size)
        session.init_ray()
        fit_fold(cells, folds, 0, Path(tmp) / "run", cfg)
        metrics = pd.read_csv(Path(tmp) / "run" / "fold-0" / "metrics.csv")
    rates = metrics.train_images_per_s.tolist()
    end_to_end = max(rates[1:]) if len(rates) > 1 else rates[0]
    out = {
        "machine": f"{torch.cuda.get_device_name() if gpu else platform.processor() or 'CPU'}, {platform.platform()}",
        "torch": torch.__version__, "model": args.model, "batch": args.batch, "crop": args.size,
        "cells": args.cells, "bare_step_images_per_s": bare, "end_to_end_images_per_s_per_epoch": rates,
        "end_to_end_images_per_s": end_to_end, "ratio": end_to_end / bare, "goal": 0.9,
    }  # fmt: skip
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
