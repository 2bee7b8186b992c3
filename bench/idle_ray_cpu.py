"""What an idle embedded Ray, left over from a stage's work, costs the work beside it.

The test suite's stages tier runs its stages on one embedded Ray in the pytest process; the
e2e tier after it starts Rays of its own in subprocesses. This measures, on this machine:
- the share of the CPUs busy over `--idle` seconds with no Ray, and with an embedded Ray that
  has run a small segment and one fold's training (as a stages test does) and now idles;
- a fixed CPU-bound workload (a small CNN's training steps in a fresh process, all cores) timed
  beside such an idle Ray and beside none, alternating for `--rounds` rounds (each round starts
  its idle Ray anew in a holder process; which side runs first alternates).

    python bench/idle_ray_cpu.py --rounds 3 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]

# Runs a small segment and fold training on an embedded Ray, says "ready", and idles until killed.
HOLDER = r"""
import sys, time
from pathlib import Path
from hpa_ray.folds.config import FoldsConfig
from hpa_ray.folds.stratify import write_folds
from hpa_ray.runtime import session
from hpa_ray.segment.config import SegmentConfig
from hpa_ray.segment.stage import run_segment
from hpa_ray.synth.config import SynthConfig
from hpa_ray.synth.generate import generate
from hpa_ray.train.config import TrainConfig
from hpa_ray.train.fit import fit_fold
root = Path(sys.argv[1])
session.init_ray(num_cpus=2)
data = generate(root / "synth", n_images=6, seed=4, cfg=SynthConfig(size=1024))
run_segment(data / "images", root / "seg", SegmentConfig(crop_size=32), data / "labels.csv")
write_folds(data / "labels.csv", root / "folds.csv", FoldsConfig(n_folds=3))
fit_fold(root / "seg" / "cells", root / "folds.csv", 0, root / "run", TrainConfig(model="tiny", epochs=2, patience=2))
print("ready", flush=True)
time.sleep(3600)
"""

# A fixed CPU-bound job: training steps of a small CNN on random 64² crops, torch's default threads.
WORKLOAD = r"""
import time, torch
from torch import nn
torch.manual_seed(0)
net = nn.Sequential(nn.Conv2d(4, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
                    nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                    nn.Linear(64, 19))
opt = torch.optim.SGD(net.parameters(), lr=0.01)
x, y = torch.rand(64, 4, 64, 64), torch.rand(64, 19)
start = time.perf_counter()
for _ in range(STEPS):
    opt.zero_grad()
    nn.functional.binary_cross_entropy_with_logits(net(x), y).backward()
    opt.step()
print(time.perf_counter() - start)
"""


def _busy_share(seconds: float) -> float:
    """Share of all CPUs busy over the next `seconds`."""
    return psutil.cpu_percent(interval=seconds) / 100


def _workload(steps: int) -> float:
    code = WORKLOAD.replace("STEPS", str(steps))
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def _start_holder(work: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(work)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit(f"the idle Ray's holder failed (exit {proc.wait()})")
    time.sleep(5)  # its last fold's actors wind down
    return proc


def _ray_processes() -> set[int]:
    return {p.pid for p in psutil.process_iter(["name"]) if p.info["name"] in ("raylet", "gcs_server")}


def _stop(proc: subprocess.Popen, others: set[int]) -> None:
    """Stops the holder and waits until its Ray's processes (those not in `others`) are gone."""
    proc.terminate()
    proc.wait(60)
    deadline = time.time() + 60
    while time.time() < deadline and _ray_processes() - others:
        time.sleep(1)
    time.sleep(2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=float, default=60, help="seconds over which idle CPU is measured")
    parser.add_argument("--steps", type=int, default=150, help="training steps of the workload")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = {"busy_share_no_ray": _busy_share(args.idle), "rounds": []}
    for k in range(args.rounds):
        alone_first = k % 2 == 1  # alternate which side runs first
        if alone_first:
            alone = _workload(args.steps)
        with tempfile.TemporaryDirectory() as tmp:
            others = _ray_processes()
            holder = _start_holder(Path(tmp))
            try:
                idle = _busy_share(args.idle) if k == 0 else None
                beside = _workload(args.steps)
            finally:
                _stop(holder, others)
        if not alone_first:
            alone = _workload(args.steps)
        result["rounds"].append({"beside_idle_ray_s": beside, "alone_s": alone, "idle_ray_busy_share": idle})
        print(f"round {k}: workload beside an idle Ray {beside:.1f} s, alone {alone:.1f} s", flush=True)
    result["busy_share_idle_ray"] = result["rounds"][0]["idle_ray_busy_share"]
    beside = statistics.median(r["beside_idle_ray_s"] for r in result["rounds"])
    alone = statistics.median(r["alone_s"] for r in result["rounds"])
    result["ratio_beside_over_alone"] = beside / alone
    print(f"CPUs busy with no Ray {result['busy_share_no_ray']:.1%}, with an idle Ray after work "
          f"{result['busy_share_idle_ray']:.1%}; workload medians beside {beside:.1f} s, alone {alone:.1f} s: "
          f"{beside / alone:.3f}x")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
