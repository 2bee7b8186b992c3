"""The GPU training benchmark script runs (here on the CPU, tiny sizes); no timing is checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_train_script_runs_on_cpu(tmp_path):
    out = subprocess.run(
        [sys.executable, "bench/gpu_train.py", "--device", "cpu", "--model", "tiny", "--cells", "256", "--size", "32",
         "--batch", "32", "--epochs", "2", "--json", str(tmp_path / "r.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "r.json").read_text())
    assert len(result["end_to_end_images_per_s_per_epoch"]) == 2
    assert result["bare_step_images_per_s"] > 0 and result["end_to_end_images_per_s"] > 0 and result["ratio"] > 0
