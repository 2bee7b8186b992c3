"""Building a fold's bags (the `bag` method) through Ray Data: Parquet part by part vs a
groupby shuffle, side by side in one run.

Cells: the four real 2048² HPA images segmented once (classical, crops 260²), their rows
repeated to N cells under new image IDs, four images per Parquet part as `segment` writes them
(`bench_train_input.make_cells`). Both ways go through `train_data.fold_datasets` with the
in-process path off (`in_process_max_bytes=0`, as for data over 256 MiB); "shuffle" is the
path a cells directory with an image spread over parts takes (`images_spread_over_parts`
made to answer 1). Timed per round, alternating which goes first:
  - cached: building and materialising the fold's train and validation bags;
  - not cached: one pass over the training bags (what each epoch costs without a cache).

    python bench/bench_bags.py [--cells 4096] [--rounds 3] [--json out.json]
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
from bench_train_input import make_cells  # bench/, the script's own directory

from hpa_ray.runtime import session
from hpa_ray.train import data as train_data
from hpa_ray.train.data import fold_datasets


def build(cells_dir: Path, folds: pd.DataFrame, grouping: str, cache: bool) -> tuple[float, int]:
    """Seconds to build (cache: materialise train and val) or pass over (no cache: the train
    bags once) one fold's bags, and how many training bags there were."""
    real = train_data.images_spread_over_parts
    if grouping == "shuffle":
        train_data.images_spread_over_parts = lambda cells_dir: 1
    try:
        start = time.perf_counter()
        train, val = fold_datasets(str(cells_dir), folds, 0, cache=cache, bags=True, in_process_max_bytes=0)
        n = sum(len(batch["image_id"]) for batch in train.iter_batches(batch_size=64, batch_format="pyarrow"))
        return time.perf_counter() - start, n
    finally:
        train_data.images_spread_over_parts = real


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    session.init_ray()
    cells_dir, folds_csv = make_cells(Path(tempfile.mkdtemp(prefix="bench_bags_")), args.cells)
    folds = pd.read_csv(folds_csv)
    build(cells_dir, folds, "parts", cache=True)  # warm-up: workers start, import the stage
    seconds: dict[str, list[float]] = {}
    for r in range(args.rounds):
        for grouping in ("parts", "shuffle") if r % 2 == 0 else ("shuffle", "parts"):
            for cache in (True, False):
                elapsed, n_bags = build(cells_dir, folds, grouping, cache)
                seconds.setdefault(f"{grouping}, {'cached' if cache else 'not cached'}", []).append(elapsed)
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
              "cells": args.cells, "training_bags": n_bags,
              "seconds": {k: [round(v, 2) for v in s] for k, s in seconds.items()}}  # fmt: skip
    for cache in ("cached", "not cached"):
        parts, shuffle = seconds[f"parts, {cache}"], seconds[f"shuffle, {cache}"]
        ratio = float(np.median([p / s for p, s in zip(parts, shuffle, strict=True)]))
        result[f"parts_over_shuffle_{cache.replace(' ', '_')}"] = round(ratio, 3)
        print(f"{cache:10s}: parts {np.median(parts):.1f} s, shuffle {np.median(shuffle):.1f} s, "
              f"parts/shuffle {ratio:.2f} (median of per-round ratios)")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
