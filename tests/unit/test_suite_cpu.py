"""bench/suite_cpu.py: the pytest plugin records each test's wall and CPU seconds; the summary
sums them by tier."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import bench_module

ROOT = Path(__file__).resolve().parents[2]


def test_the_plugin_records_a_busy_test_and_an_idle_one(tmp_path):
    (tmp_path / "test_inner.py").write_text(
        "import time\n"
        "def test_busy():\n    end = time.process_time() + 0.3\n    while time.process_time() < end: pass\n"
        "def test_idle():\n    time.sleep(0.3)\n"
    )  # fmt: skip
    record = tmp_path / "record.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "bench")}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "suite_cpu", "-p", "no:cacheprovider",
                           "--suite-cpu", str(record), "test_inner.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {row["id"]: row for row in map(json.loads, record.read_text().splitlines())}
    busy, idle = rows["test_inner.py::test_busy"], rows["test_inner.py::test_idle"]
    assert busy["wall"] >= 0.3 and busy["cpu"] >= 0.2, busy
    assert idle["wall"] >= 0.3 and idle["cpu"] < busy["cpu"], (idle, busy)


def test_the_summary_sums_by_tier_and_gives_the_floor():
    records = [{"id": "tests/unit/test_a.py::test_x", "wall": 2.0, "cpu": 2.0},
               {"id": "tests/unit/test_a.py::test_y", "wall": 1.0, "cpu": 1.0},
               {"id": "tests/e2e/test_b.py::test_z", "wall": 10.0, "cpu": 15.0},
               {"id": "test_c.py::test_w", "wall": 1.0, "cpu": 0.0}]  # fmt: skip
    summary = bench_module("suite_cpu").summarise(records, cores=2)
    assert summary["tiers"]["unit"] == {"tests": 2, "wall_s": 3.0, "cpu_s": 3.0, "busy": 0.5}
    assert summary["tiers"]["e2e"]["busy"] == 0.75 and summary["tiers"]["other"]["tests"] == 1
    assert summary["total"]["tests"] == 4 and summary["total"]["cpu_s"] == 18.0
    assert summary["floor_s"] == 9.0
