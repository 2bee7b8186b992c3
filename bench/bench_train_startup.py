"""A short fold training's fixed costs, two checkouts side by side (before / after a change).

Small data (synthetic 1024² images, 32² crops, model `tiny`): the time is start-up (the fold's
datasets, Ray Train's controller and worker group), the epochs' reporting, and shut-down, not
the model. Each round runs `fit_fold` in a fresh process per checkout, alternating, so both see
the same machine; a fresh process pays the imports and first Ray Data calls a Tune trial's actor
pays, and on top starts its local Ray (the same for both sides).

    python bench/bench_train_startup.py BEFORE_CHECKOUT AFTER_CHECKOUT [--rounds 3] [--epochs 3]
        [--json docs/results/train_startup_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# Run in the child process, with the checkout under test first on the path.
CHILD = """
import sys, time
from pathlib import Path
from hpa_ray.train.config import TrainConfig
from hpa_ray.train.fit import fit_fold
root, epochs = Path(sys.argv[1]), int(sys.argv[2])
start = time.perf_counter()
fit_fold(root / "seg" / "cells", root / "folds.csv", 0, root / f"run-{time.time_ns()}",
         TrainConfig(model="tiny", batch_size=32, cpus_per_worker=0.5, epochs=epochs))
print("SECONDS", time.perf_counter() - start)
"""


def make_data(root: Path) -> None:
    import pandas as pd

    from hpa_ray.folds.config import FoldsConfig
    from hpa_ray.folds.stratify import make_folds, read_label_matrix
    from hpa_ray.segment.config import SegmentConfig
    from hpa_ray.segment.stage import run_segment
    from hpa_ray.synth.config import SynthConfig
    from hpa_ray.synth.generate import generate

    data = generate(root / "synth", 6, 7, SynthConfig(size=1024))
    run_segment(data / "images", root / "seg", SegmentConfig(crop_size=32), data / "labels.csv")
    ids, y = read_label_matrix(data / "labels.csv")
    folds = pd.DataFrame({"image_id": ids, "fold": make_folds(y, FoldsConfig(n_folds=2))})
    folds.to_csv(root / "folds.csv", index=False)


def one_fit(checkout: Path, root: Path, epochs: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(checkout), "RAY_USAGE_STATS_ENABLED": "0"}
    for name in ("RAY_ADDRESS", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"):  # each checkout's own settings
        env.pop(name, None)
    out = subprocess.run([sys.executable, "-c", CHILD, str(root), str(epochs)], cwd=checkout, env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"fit_fold in {checkout} failed:\n{out.stderr[-3000:]}")
    return float(next(line for line in out.stdout.splitlines() if line.startswith("SECONDS")).split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_data(root)
        seconds = {"before": [], "after": []}
        for r in range(args.rounds):
            for side in ("before", "after") if r % 2 == 0 else ("after", "before"):
                seconds[side].append(one_fit(getattr(args, side).resolve(), root, args.epochs))
                print(f"round {r} {side}: {seconds[side][-1]:.1f} s", flush=True)
    medians = {side: statistics.median(v) for side, v in seconds.items()}
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
              "epochs": args.epochs, "seconds": seconds, "median_s": medians,
              "ratio_after_before": medians["after"] / medians["before"]}  # fmt: skip
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
