"""Folds trained at once: `train_folds` with N folds in parallel vs N - 1, side by side.

`concurrent_trials` keeps one CPU free for Ray Data's tasks. With cached crops those tasks run
only while a fold loads its data, before its workers start, so the last fold to start may take
that CPU too: on the demo's 2 cores that is 3 folds of 0.5 CPU at once instead of 2 and then 1.
This runs the same folds both ways, alternating, each in a fresh run directory, and reports the
wall time of `train_folds` (Ray's start left out: one `ray.init` for all rounds, and a 1-epoch
warm-up run first).

    python bench/bench_fold_concurrency.py --cells out/demo/segment/train/cells \\
        --folds out/demo/folds.csv --epochs 8 --rounds 2 --json docs/results/fold_concurrency.json

The cells and folds of a finished demo (`python -m hpa_ray demo`) serve; the training config is
the demo's (`small`, batch 32, 0.5 CPU per fold, cached crops).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd

from hpa_ray.runtime import session
from hpa_ray.train import fit as train
from hpa_ray.train.config import TrainConfig


def run_once(cells: Path, folds_csv: Path, cfg: TrainConfig, at_once: int) -> float:
    """Seconds of `train_folds` over every fold with `at_once` of them in parallel."""
    chosen = train.concurrent_trials
    train.concurrent_trials = lambda *args, **kwargs: at_once  # the driver decides the concurrency
    try:
        folds = sorted(pd.read_csv(folds_csv).fold.unique().tolist())
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            train.train_folds(cells, folds_csv, folds, Path(tmp) / "run", cfg)
            return time.perf_counter() - start
    finally:
        train.concurrent_trials = chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=Path, required=True)
    parser.add_argument("--folds", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cfg = TrainConfig(model="small", batch_size=32, epochs=args.epochs, patience=args.epochs, cpus_per_worker=0.5,
                      lr=0.002, seed=0)  # fmt: skip
    session.init_ray()
    n_folds = pd.read_csv(args.folds).fold.nunique()
    if n_folds < 2:
        parser.error(f"{args.folds} has {n_folds} fold: nothing to run at once")
    chosen = train.concurrent_trials(cfg, n_folds, cached=True)
    print(f"{n_folds} folds, {args.epochs} epochs; concurrent_trials chooses {chosen} at once "
          f"({session.cluster_resources().get('CPU')} CPUs)", flush=True)  # fmt: skip
    # Not timed: the first `train_folds` of a process also pays Tune's and Ray Train's imports.
    run_once(args.cells, args.folds, cfg.model_copy(update={"epochs": 1, "patience": 1}), n_folds)
    times: dict[int, list[float]] = {n_folds - 1: [], n_folds: []}
    for k in range(args.rounds):
        for at_once in (n_folds - 1, n_folds) if k % 2 == 0 else (n_folds, n_folds - 1):
            seconds = run_once(args.cells, args.folds, cfg, at_once)
            times[at_once].append(seconds)
            print(f"round {k}: {at_once} at once: {seconds:.1f} s", flush=True)
    before, after = (sum(times[n]) / len(times[n]) for n in (n_folds - 1, n_folds))
    result = {"machine": f"{platform.machine()}, {session.cluster_resources().get('CPU')} CPUs, {platform.platform()}",
              "folds": n_folds, "epochs": args.epochs, "seconds": {str(k): v for k, v in times.items()},
              "mean_s": {str(n_folds - 1): before, str(n_folds): after}, "ratio": after / before}  # fmt: skip
    print(f"{n_folds - 1} at once {before:.1f} s, {n_folds} at once {after:.1f} s: {after / before:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
