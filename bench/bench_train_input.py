"""Training input path: Parquet → decode → augment → batch, crops/s per CPU core at 260²×4.

Cells: the four real 2048² HPA images segmented once (classical, crops 260²), their rows
repeated to N cells. Measures, side by side in one run:
  - one core, in-process: read the Parquet, `prepare_batch` (crops_to_numpy + albumentations
    transpose/flips) in batches of 256;
  - Ray Data on every core: the same `fold_datasets` pipeline `train` uses, iterated as uint8
    torch batches (what the workers see), crops/s over all cores and per core; without and with
    `cache` (the fold's crops kept in the object store, only the augmentation runs per pass).

    python bench/bench_train_input.py [--cells 4096] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hpa_ray.runtime import session
from hpa_ray.segment.config import SegmentConfig
from hpa_ray.segment.stage import run_segment
from hpa_ray.train.data import fold_datasets, prepare_batch

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def make_cells(tmp: Path, n_cells: int) -> tuple[Path, Path]:
    run_segment(REAL / "hpa-real" / "images", tmp / "seg", SegmentConfig(), REAL / "train.csv")
    table = pq.read_table(tmp / "seg" / "cells")
    reps = -(-n_cells // table.num_rows)
    out = tmp / "cells"
    out.mkdir()
    shutil.copy(tmp / "seg" / "segment_config.yaml", tmp / "segment_config.yaml")  # how they were made
    for r in range(reps):  # new image IDs per copy, so folds can split them
        ids = pa.array([f"{i}-{r}" for i in table.column("image_id").to_pylist()])
        pq.write_table(table.set_column(0, "image_id", ids), out / f"part-{r}.parquet", compression="zstd")
    ids = sorted({f"{i}-{r}" for i in set(table.column("image_id").to_pylist()) for r in range(reps)})
    folds = tmp / "folds.csv"
    pd.DataFrame({"image_id": ids, "fold": [i % 5 for i in range(len(ids))]}).to_csv(folds, index=False)
    return out, folds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, default=4096)
    parser.add_argument("--json")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_input_"))
    session.init_ray()
    cells_dir, folds_csv = make_cells(tmp, args.cells)
    start = time.perf_counter()
    n = 0
    for path in sorted(cells_dir.glob("*.parquet")):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=256, columns=["crop", "labels"]):
            n += len(prepare_batch(pa.Table.from_batches([batch]), None, augment=True)["crop"])
    one_core = n / (time.perf_counter() - start)
    cores = os.cpu_count()
    results = {
        "machine": f"{platform.machine()}, {cores} cores, Python {platform.python_version()}",
        "crop": "4x260x260 uint8",
        "one_core_in_process_crops_per_s": round(one_core),
    }
    for cache in (False, True):
        train, _ = fold_datasets(str(cells_dir), pd.read_csv(folds_csv), 0, cache=cache)
        rates = []
        for _epoch in range(3):  # the first pass starts workers (and fills the cache); report the others
            start, seen = time.perf_counter(), 0
            for batch in train.iter_torch_batches(batch_size=64):
                seen += len(batch["crop"])
            rates.append(seen / (time.perf_counter() - start))
        name = "ray_data_cached" if cache else "ray_data"
        results[f"{name}_crops_per_s_by_pass"] = [round(r) for r in rates]
        results[f"{name}_crops_per_s"] = round(max(rates[1:]))
        results[f"{name}_crops_per_s_per_core"] = round(max(rates[1:]) / cores)
        results["cells_per_pass_ray"] = seen
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
