"""Several nodes on one machine (ray.cluster_utils.Cluster): segmentation spreads over them, and a
worker node lost mid-run loses no image and writes no cell twice; a fold whose training worker
dies resumes from its checkpoint."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import run_group

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_segmentation_survives_a_lost_worker_node(tmp_path):
    from hpa_ray.synth.config import SynthConfig
    from hpa_ray.synth.generate import generate

    data = generate(tmp_path / "synth", n_images=12, seed=11, cfg=SynthConfig(size=1024))
    out = tmp_path / "seg"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    run = run_group(
        [sys.executable, "tests/multinode_segment.py", str(data / "images"), str(data / "labels.csv"), str(out),
         str(tmp_path / "report.json")],
        cwd=ROOT, env=env, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert "at" in report["removed"], "a worker node was removed during the run"
    assert report["removed"]["parts_before"] < 12, "it was removed while images were still left"
    cut = set(report["removed"]["nodes_before"]) | set(report["nodes"])  # before the removal, and in the end
    assert len(cut & set(report["worker_ids"])) == 2, "both worker nodes cut cells"
    manifest = pd.read_parquet(out / "images.parquet")
    assert sorted(manifest.image_id) == sorted(pd.read_csv(data / "labels.csv").ID), "every image, once"
    assert (manifest.status == "ok").all()
    cells = pd.read_parquet(out / "cells", columns=["image_id", "cell_id"])
    assert not cells.duplicated().any(), "no cell twice"
    with_cells = manifest[manifest.n_cells > 0].set_index("image_id").n_cells.to_dict()
    assert cells.groupby("image_id").size().to_dict() == with_cells


@pytest.mark.slow
def test_fold_training_resumes_after_its_worker_dies_on_a_multinode_cluster(tmp_path):
    from hpa_ray.folds.config import FoldsConfig
    from hpa_ray.folds.stratify import make_folds, read_label_matrix
    from hpa_ray.synth.config import SynthConfig
    from hpa_ray.synth.generate import generate

    data = generate(tmp_path / "synth", n_images=6, seed=5, cfg=SynthConfig(size=2048))
    ids, y = read_label_matrix(data / "labels.csv")
    pd.DataFrame({"image_id": ids, "fold": make_folds(y, FoldsConfig(n_folds=3))}).to_csv(tmp_path / "folds.csv",
                                                                                           index=False)  # fmt: skip
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    seg = run_group(
        [sys.executable, "-m", "hpa_ray.segment", "--images", str(data / "images"), "--labels",
         str(data / "labels.csv"), "--out", str(tmp_path / "seg"), "crop_size=32"],
        cwd=ROOT, env=env, timeout=600,
    )  # fmt: skip
    assert seg.returncode == 0, seg.stderr[-3000:]
    run = run_group(
        [sys.executable, "tests/multinode_train.py", str(tmp_path / "seg" / "cells"), str(tmp_path / "folds.csv"),
         str(tmp_path / "run")],
        cwd=ROOT, env=env, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    fold_dir = tmp_path / "run" / "fold-0"
    assert (fold_dir / "injected_failure").exists(), "the worker was killed"
    reports = [json.loads(line) for line in (fold_dir / "metrics.jsonl").read_text().splitlines()]
    resumed = [r for r in reports if r["resumed_from_epoch"] >= 0]
    assert resumed and resumed[0]["epoch"] == resumed[0]["resumed_from_epoch"] + 1 >= 1, "from a checkpoint"
    assert list(pd.read_csv(fold_dir / "metrics.csv").epoch) == [0, 1, 2, 3]
