"""Fold training through Ray Train vs a plain PyTorch loop: same cells, model and epochs.

Cells as in bench_train_input.py (real HPA images, crops 260², repeated). Model `tiny` on CPU,
one Ray Train worker (1 CPU, 1 torch thread) vs the plain loop in this process (1 torch
thread) that reads the Parquet with pyarrow and runs the same prepare_batch, model, loss,
optimiser and validation. Both sides include everything an epoch does; Ray Train's side also
includes starting its worker group and checkpointing each epoch.

    python bench/bench_train_overhead.py [--cells 2048] [--epochs 3] [--json out.json]
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
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from bench_train_input import make_cells

from hpa_ray.core.metrics import macro_ap
from hpa_ray.runtime import session
from hpa_ray.train.backbones import normalisation
from hpa_ray.train.config import TrainConfig
from hpa_ray.train.data import normalise, prepare_batch
from hpa_ray.train.fit import fit_fold
from hpa_ray.train.model import build_model


def _batches(table: pa.Table, cfg: TrainConfig, augment: bool):
    for start in range(0, table.num_rows, cfg.batch_size):
        b = prepare_batch(table.slice(start, cfg.batch_size), cfg.image_size, augment)
        yield torch.from_numpy(b["crop"]), torch.from_numpy(b["labels"])


def plain_loop(cells_dir: Path, folds_csv: Path, cfg: TrainConfig) -> float:
    start = time.perf_counter()
    torch.set_num_threads(cfg.threads_per_worker)
    torch.manual_seed(cfg.seed)
    table = pq.read_table(cells_dir, columns=["image_id", "crop", "labels"])
    folds = pd.read_csv(folds_csv).set_index("image_id").fold
    is_val = np.asarray(folds.loc[table.column("image_id").to_pylist()].values == 0)
    train, val = table.filter(pa.array(~is_val)), table.filter(pa.array(is_val))
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    mean, std = normalisation(cfg.model)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for _ in range(cfg.epochs):
        model.train()
        for crops, labels in _batches(train, cfg, augment=True):
            loss = loss_fn(model(normalise(crops, mean, std)), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        model.eval()
        with torch.no_grad():
            scores, truth = zip(*[(torch.sigmoid(model(normalise(c, mean, std))).numpy(), y.numpy())
                                  for c, y in _batches(val, cfg, augment=False)])  # fmt: skip
        macro_ap(np.concatenate(truth), np.concatenate(scores))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    session.init_ray()
    cells_dir, folds_csv = make_cells(tmp, args.cells)
    cfg = TrainConfig(model="tiny", epochs=args.epochs, patience=args.epochs, batch_size=32, lr=1e-3)
    t_plain = plain_loop(cells_dir, folds_csv, cfg)
    start = time.perf_counter()
    fit_fold(cells_dir, folds_csv, 0, tmp / "run", cfg)
    t_ray = time.perf_counter() - start
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "model": cfg.model, "epochs": cfg.epochs, "cells": args.cells, "crop": "4x260x260",
        "plain_loop_s": round(t_plain, 1), "ray_train_s": round(t_ray, 1),
        "ray_train_over_plain": round(t_ray / t_plain, 2),
    }  # fmt: skip
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
