"""Ray Train's poll interval: the demo's folds trained with the controller polling every 0.5 s
(a local Ray's setting, `hpa_ray.runtime.session`) against Ray's default 2 s.

A worker's next epoch report waits for the controller's poll, so a local Ray polls often (short
epochs are not stretched to 2 s); each poll costs some CPU, which on 2 cores is taken from the
training. This measures what that costs where epochs are long. Each run is a fresh process with
its own local Ray, RAY_TRAIN_HEALTH_CHECK_INTERVAL_S set before Ray starts (a local Ray hands a
user's setting to its workers); the two settings alternate, and each run reports the wall time
of `train_folds` (Ray's start left out) and the folds' training rates after the first epoch.

    python bench/bench_train_poll.py --cells out/demo/segment/train/cells \\
        --folds out/demo/folds.csv --epochs 12 --rounds 2 --json docs/results/train_poll_cpu.json

The cells and folds of a finished demo (`python -m hpa_ray demo`) serve; the training config is
the demo's (`small`, batch 32, 0.5 CPU per fold, all folds at once through Ray Tune).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
SETTINGS = {"0.5 s": "0.5", "2 s": "2"}


def child(cells: str, folds_csv: str, epochs: int) -> dict:
    """In a fresh process: every fold at once, as the demo trains them; seconds and rates."""
    import pandas as pd

    from hpa_ray.runtime import session
    from hpa_ray.train.config import TrainConfig
    from hpa_ray.train.fit import train_folds

    session.init_ray()
    cfg = TrainConfig(model="small", epochs=epochs, batch_size=32, cpus_per_worker=0.5, patience=epochs, seed=0,
                      lr=0.002)  # fmt: skip
    folds = sorted(pd.read_csv(folds_csv).fold.unique().tolist())
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train_folds(cells, folds_csv, folds, tmp, cfg)
        seconds = time.perf_counter() - start
        rates = [pd.read_csv(Path(tmp) / f"fold-{k}" / "metrics.csv").train_images_per_s.iloc[1:].mean()
                 for k in folds]  # fmt: skip
    return {"seconds": seconds, "cells_per_s_per_fold": [float(r) for r in rates]}


def run(setting: str, args) -> dict:
    env = {**os.environ, POLL_ENV: SETTINGS[setting]}
    command = [sys.executable, __file__, "--child", "--cells", args.cells, "--folds", args.folds,
               "--epochs", str(args.epochs)]  # fmt: skip
    out = subprocess.run(command, env=env, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"the {setting} run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", required=True)
    parser.add_argument("--folds", required=True)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.cells, args.folds, args.epochs)), flush=True)
        return
    results: dict[str, list] = {setting: [] for setting in SETTINGS}
    for k in range(args.rounds):
        order = list(SETTINGS) if k % 2 == 0 else list(SETTINGS)[::-1]
        for setting in order:
            result = run(setting, args)
            results[setting].append(result)
            print(f"round {k + 1} {setting:>5}: train_folds {result['seconds']:.1f} s, cells/s per fold "
                  f"{', '.join(f'{r:.0f}' for r in result['cells_per_s_per_fold'])}", flush=True)  # fmt: skip
    mean = {s: sum(r["seconds"] for r in rs) / len(rs) for s, rs in results.items()}
    ratio = mean["2 s"] / mean["0.5 s"]
    print(f"mean: 0.5 s {mean['0.5 s']:.1f} s, 2 s {mean['2 s']:.1f} s: {ratio:.2f}×")
    if args.json:
        machine = {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                   "python": platform.python_version()}  # fmt: skip
        record = {"machine": machine, "epochs": args.epochs, "runs": results, "mean_seconds": mean,
                  "ratio_2s_to_0.5s": ratio}  # fmt: skip
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
