"""The commands the README tells people to type: a stage's CLI in a fresh process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pandas as pd

from tests.helpers import run_group

ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}


def _run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return run_group([sys.executable, *args], timeout=1500, env=ENV, cwd=cwd)


def test_a_failed_image_reaches_the_quiet_console(synth_set, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(synth_set / "images", images)
    broken = sorted(images.glob("*_green.png"))[0]
    broken.write_bytes(broken.read_bytes()[:200])
    out = _run("-m", "hpa_ray.segment", "--images", str(images), "--labels", str(synth_set / "labels.csv"),
               "--out", str(tmp_path / "o"), "crop_size=32")  # fmt: skip
    assert out.returncode == 3, out.stderr[-3000:]
    image_id = broken.name.removesuffix("_green.png")
    assert f"failed: {image_id}" in out.stderr and "5 ok, 1 failed" in out.stdout
    assert len(out.stdout.splitlines() + out.stderr.splitlines()) < 20, out.stdout + out.stderr
    assert "Token authentication" not in out.stdout + out.stderr  # Ray's start-up notice: the log file's
    assert (tmp_path / "o" / "logs" / "segment.log").exists()


def test_segment_cli_in_a_fresh_process(synth_set, tmp_path):
    out = _run(
        "-m",
        "hpa_ray.segment",
        "--images",
        str(synth_set / "images"),
        "--labels",
        str(synth_set / "labels.csv"),
        "--out",
        str(tmp_path / "o"),
        "crop_size=32",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "6 ok, 0 failed" in out.stdout
    paths = json.loads(out.stdout.strip().splitlines()[-1])
    assert pd.read_parquet(paths["manifest"]).n_cells.sum() > 0
