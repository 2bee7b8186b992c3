"""Every stage on s3:// through a local S3.

The S3 server is moto's (a real HTTP S3 API on 127.0.0.1; tests/conftest.py's s3_env); pyarrow
reaches it through AWS_ENDPOINT_URL, the same way it reaches AWS, so the stages run unchanged.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pandas as pd

from hpa_ray.core import storage
from tests.conftest import BUCKET
from tests.helpers import run_group


def _run(env: dict, cwd, *args: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | env | {"RAY_USAGE_STATS_ENABLED": "0"}
    return run_group([sys.executable, "-m", *args], timeout=900, env=full, cwd=cwd)


def _keys(prefix: str) -> list[str]:
    return [e.relative for e in storage.list_files(f"s3://{BUCKET}/{prefix}", recursive=True)]


def test_every_stage_reads_and_writes_s3(s3_env, synth_set, tmp_path):
    """segment → folds → tune → train → predict → validate → evaluate → report, all on s3:// paths, each
    a fresh process with its own Ray (as on a cluster). Nothing lands in the working directory."""
    data, out = f"s3://{BUCKET}/data", f"s3://{BUCKET}/out"
    storage.upload_dir(synth_set, data)
    work = tmp_path / "work"
    work.mkdir()
    run = lambda *args: _run(s3_env, work, *args)  # noqa: E731

    seg = run("hpa_ray.segment", "--images", f"{data}/images", "--labels", f"{data}/labels.csv",
              "--out", f"{out}/segment", "crop_size=32")  # fmt: skip
    assert seg.returncode == 0, seg.stderr[-3000:]
    assert "6 ok, 0 failed" in seg.stdout
    manifest = pd.read_parquet(io.BytesIO(storage.read_bytes(f"{out}/segment/images.parquet")))
    assert len(manifest) == 6 and (manifest.status == "ok").all() and manifest.n_cells.sum() > 0
    assert json.loads(storage.read_text(f"{out}/segment/inputs.json"))["input_dir"] == f"{data}/images"
    assert any(k.startswith("part-") for k in _keys("out/segment/cells"))
    again = run("hpa_ray.segment", "--images", f"{data}/images", "--labels", f"{data}/labels.csv",
                "--out", f"{out}/segment", "crop_size=32")  # fmt: skip
    assert again.returncode == 0 and "6 already done" in again.stdout, again.stderr[-3000:]

    folds = run("hpa_ray.folds", "--labels", f"{data}/labels.csv", "--out", f"{out}/folds.csv", "--n-folds", "2")
    assert folds.returncode == 0, folds.stderr[-3000:]
    assert {"folds.csv", "folds_balance.csv", "folds_config.yaml"} <= set(_keys("out"))

    space = "search_space={lr: {type: loguniform, low: 0.001, high: 0.01}, epochs: {type: choice, values: [1]}}"
    search = run("hpa_ray.tune", "--cells", f"{out}/segment/cells", "--folds", f"{out}/folds.csv",
                 "--out", f"{out}/search", "train.model=tiny", "train.cpus_per_worker=0.5", "train.batch_size=32",
                 "num_samples=2", "max_concurrent_trials=1", "asha.grace_period=1", space)  # fmt: skip
    assert search.returncode == 0, search.stderr[-3000:]
    search_keys = _keys("out/search")
    assert {"best_config.yaml", "trials.csv", "tune_config.yaml"} <= set(search_keys)
    trial_logs = [k for k in search_keys if k.startswith("trials/") and k.endswith(("metrics.jsonl", "state.pt"))]
    assert len(trial_logs) == 4, search_keys  # each trial's metrics and its checkpoint
    assert any(k.startswith("ray_results/search-search/") for k in search_keys), "Tune's experiment in S3"

    # The search's best config, read from S3, as jobs/pipeline.sh does.
    train = run("hpa_ray.train", "--cells", f"{out}/segment/cells", "--folds", f"{out}/folds.csv", "--fold", "0",
                "--out", f"{out}/run", "--config", f"{out}/search/best_config.yaml")  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]
    run_keys = _keys("out/run")
    for key in ("config.yaml", "segment_config.yaml", "fold-0/best/model.pt", "fold-0/metrics.csv",
                "fold-0/best/metrics.json", "fold-0/config.yaml"):  # fmt: skip
        assert key in run_keys, f"{key} missing from {run_keys}"
    assert any(k.startswith("fold-0/tensorboard/events") for k in run_keys), "TensorBoard events uploaded"
    assert any(k.startswith("ray_results/") and "checkpoint" in k for k in run_keys), "Ray Train checkpoints in S3"

    submission = f"{out}/submission.csv"
    pred = run("hpa_ray.predict", "--images", f"{data}/images", "--run-dir", f"{out}/run", "--out", submission,
               "--ids", f"{data}/labels.csv")  # fmt: skip
    assert pred.returncode == 0, pred.stderr[-3000:]
    valid = run("hpa_ray.predict.submission", "validate", submission, "--images", f"{data}/images")
    assert valid.returncode == 0 and "valid: 6 rows" in valid.stdout, valid.stderr[-3000:]
    scored = run("hpa_ray.evaluate", "--submission", submission, "--truth", f"{data}/truth.parquet",
                 "--out", f"{out}/evaluation.json")  # fmt: skip
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert 0 <= json.loads(storage.read_text(f"{out}/evaluation.json"))["mAP"] <= 1

    report = run("hpa_ray.report", "--out", str(tmp_path / "report"), "--segment-dir", f"{out}/segment",
                 "--run-dir", f"{out}/run", "--folds", f"{out}/folds.csv")  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]
    page = (tmp_path / "report" / "index.html").read_text()
    assert "training_curves.png" in page and "over the image" in page, "outlines drawn over the S3 images"
    assert list(work.iterdir()) == [], "a stage wrote to the local working directory"
