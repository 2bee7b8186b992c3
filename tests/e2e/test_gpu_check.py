"""bench/gpu_check.py at tiny sizes on the CPU: every step runs and writes every field.

Timings from a 2-core CPU mean nothing; what is checked is that the script a GPU machine runs
in one go (bench/README.md) works and reports what docs/lab/benchmarks.md records.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import bench_module

ROOT = Path(__file__).resolve().parents[2]
UTILISATION = ("gpu_util_mean", "gpu_util_max", "gpu_mem_max_mib", "cpu_util_mean")
FIELDS = {
    "pytest_gpu": ("summary", "cuda"),
    "segment": ("encoder", "images", "cells", "stage_images_per_s", "bare_infer_images_per_s",
                "cpu_steps_s_per_image_one_core", "cpu_bound_images_per_s", "limited_by"),
    "train": ("bare_step_images_per_s", "end_to_end_images_per_s_per_epoch", "end_to_end_images_per_s", "ratio",
              "epoch_parts", "input_wait_share", "limited_by"),
    "predict": ("images", "cells", "images_per_s", "gpu_classifier"),
    "demo": ("model", "model_chosen_by_demo", "wall_s", "mAP", "prior_mAP", "per_class_ap"),
    "train_compile": ("bare_step_images_per_s", "end_to_end_images_per_s", "ratio", "compile"),
    "train_bag": ("bare_step_images_per_s", "end_to_end_images_per_s", "ratio", "method"),
}  # fmt: skip


def _run(out: Path, *args: str, env: dict | None = None) -> dict:
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", str(out), "--size", "tiny", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=1500, env={**os.environ, **(env or {})})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "gpu_check.json").read_text())


@pytest.mark.slow
def test_every_step_writes_every_field_and_a_failed_step_does_not_stop_the_rest(tmp_path):
    # The first step is made to fail (GPU_CHECK_FAIL_STEP): its error is recorded and every
    # later step still runs (one run of the script for both checks: each costs minutes here).
    # The demo step's run is the quick demo's (test_cli): its record is checked below on that run.
    all_steps = bench_module("gpu_check").STEPS
    assert set(FIELDS) == set(all_steps), "every step's fields are listed here"
    steps = ",".join(step for step in all_steps if step != "demo")
    report = _run(tmp_path / "out", "--budget", "1400", "--steps", steps, env={"GPU_CHECK_FAIL_STEP": "pytest_gpu"})
    assert report["machine"]["cpus"] >= 1 and report["machine"]["ray"]
    failed = report["steps"]["pytest_gpu"]
    assert failed["status"] == "error" and "GPU_CHECK_FAIL_STEP" in failed["error"]
    assert failed["seconds"] > 0 and all(key in failed for key in UTILISATION)
    for step, fields in FIELDS.items():
        if step in ("pytest_gpu", "demo"):
            continue
        entry = report["steps"][step]
        assert entry["status"] == "ok", (step, entry.get("error"))
        assert entry["seconds"] > 0 and all(key in entry for key in UTILISATION)
        assert all(key in entry["result"] for key in fields), (step, sorted(entry["result"]))
    assert report["steps"]["segment"]["result"]["cells"] > 0
    assert report["steps"]["predict"]["result"]["cells"] > 0
    parts = report["steps"]["train"]["result"]["epoch_parts"]
    assert len(parts) == 2 and all(value >= 0 for part in parts for value in part.values()), parts
    assert report["steps"]["demo"]["status"] == "skipped"
    assert report["steps"]["train_compile"]["result"]["compile"] is True
    assert report["steps"]["train_bag"]["result"]["method"] == "bag"
    assert (tmp_path / "out" / "gpu_check.log").stat().st_size > 0
    assert not (tmp_path / "out" / "work").exists(), "scratch data is removed"


def test_pytest_gpu_step_reports_its_summary_and_unasked_steps_are_skipped(tmp_path):
    report = _run(tmp_path / "out", "--steps", "pytest_gpu", "--limit", "pytest_gpu=300")
    entry = report["steps"]["pytest_gpu"]
    assert entry["status"] == "ok" and all(key in entry["result"] for key in FIELDS["pytest_gpu"])
    assert entry["limit_s"] == 300, "a limit given for this call replaces the size's"
    assert report["steps"]["train"] == {"status": "skipped", "error": "not asked for"}


def test_the_demo_step_records_the_demos_scores(quick_demo, monkeypatch, tmp_path):
    """The demo step on the quick demo's finished run (its run_demo is that run): the record holds
    every field, the scores as evaluation.json has them."""
    out, demo = quick_demo
    assert out.returncode == 0, out.stderr[-3000:]
    gpu_check = bench_module("gpu_check")
    asked = {}

    def finished_demo(work, seed, quick, model):
        asked.update(work=work, quick=quick, model=model)
        return {"evaluation": demo / "evaluation.json", "models": demo / "runs" / "demo"}

    monkeypatch.setattr("hpa_ray.demo.run_demo", finished_demo)
    result = gpu_check.step_demo(gpu_check.SIZES["tiny"], tmp_path)
    # at tiny sizes the quick demo, with the tiny model; a full one on a GPU chooses its own (B2)
    assert asked == {"work": tmp_path / "demo", "quick": True, "model": "tiny"}
    assert result["model"] == "tiny" and result["model_chosen_by_demo"] is False, "read from the run's fold config"
    scores = json.loads((demo / "evaluation.json").read_text())
    assert all(key in result for key in FIELDS["demo"]) and result["wall_s"] >= 0
    assert result["mAP"] == scores["mAP"] and result["prior_mAP"] == scores["prior_mAP"] and result["per_class_ap"]
