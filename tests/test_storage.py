"""Local and object-storage paths (hpa_ray.core.storage), and every stage on s3:// through a local S3.

The S3 server is moto's (a real HTTP S3 API on 127.0.0.1); pyarrow reaches it through
AWS_ENDPOINT_URL, the same way it reaches AWS, so the stages run unchanged.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import pandas as pd
import pyarrow.fs as pafs
import pytest

from hpa_ray.core import storage
from tests.helpers import run_group

BUCKET = "hpa-test"


@pytest.fixture(scope="module")
def s3_env():
    """A local S3 server with one bucket; its settings in os.environ for this module's tests."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    storage._filesystem.cache_clear()
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield env
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    storage._filesystem.cache_clear()
    server.stop()


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "root")
    request.getfixturevalue("s3_env")
    return f"s3://{BUCKET}/{request.node.name.replace('[', '-').rstrip(']')}"


def test_paths_and_uris():
    assert storage.is_uri("s3://b/k") and storage.is_uri("gs://b/k") and not storage.is_uri("/tmp/x")
    assert not storage.is_uri("file:///tmp/x") and storage.resolve("file:///tmp/x")[1] == "/tmp/x"
    assert storage.join("s3://b/a/", "c", "d.csv") == "s3://b/a/c/d.csv"
    assert storage.parent("s3://b/a/c.csv") == "s3://b/a" and storage.name("s3://b/a/c.csv") == "c.csv"
    assert storage.absolute("s3://b/a") == "s3://b/a" and os.path.isabs(storage.absolute("rel/x"))
    fs, inner = storage.resolve("relative/file.txt")
    assert isinstance(fs, pafs.LocalFileSystem) and inner == os.path.abspath("relative/file.txt")


def test_gs_uris_resolve_to_the_gcs_filesystem():
    fs, inner = storage.resolve("gs://some-bucket/runs/b2/fold-0")
    assert type(fs).__name__ == "GcsFileSystem" and inner == "some-bucket/runs/b2/fold-0"


def test_files_round_trip(root, tmp_path):
    assert not storage.exists(root) and storage.list_files(root) == []
    storage.write_text(storage.join(root, "a.txt"), "alpha")
    storage.write_bytes(storage.join(root, "sub", "b.bin"), b"\x00\x01")
    storage.write_text(storage.join(root, "sub", "deep", "c.txt"), "gamma")
    assert storage.read_text(storage.join(root, "a.txt")) == "alpha"
    assert storage.read_bytes(storage.join(root, "sub", "b.bin")) == b"\x00\x01"
    assert storage.is_file(storage.join(root, "a.txt")) and storage.is_dir(storage.join(root, "sub"))
    assert [e.relative for e in storage.list_files(root)] == ["a.txt"]  # not recursive: files only
    found = storage.list_files(root, "sub/*", recursive=True)
    assert [e.relative for e in found] == ["sub/b.bin", "sub/deep/c.txt"]  # fnmatch's * crosses "/"
    assert found[0].path == storage.join(root, "sub", "b.bin") and found[0].size == 2 and found[0].mtime > 0
    storage.append_text(storage.join(root, "log.jsonl"), "1\n")
    storage.append_text(storage.join(root, "log.jsonl"), "2\n")
    assert storage.read_text(storage.join(root, "log.jsonl")) == "1\n2\n"
    storage.copy_file(storage.join(root, "a.txt"), storage.join(root, "copy", "a.txt"))
    assert storage.read_text(storage.join(root, "copy", "a.txt")) == "alpha"
    (tmp_path / "up" / "x").mkdir(parents=True)
    (tmp_path / "up" / "x" / "f.txt").write_text("up")
    storage.upload_dir(tmp_path / "up", storage.join(root, "uploaded"))
    assert storage.read_text(storage.join(root, "uploaded", "x", "f.txt")) == "up"
    with storage.open_input(storage.join(root, "a.txt")) as f:
        assert f.read() == b"alpha"
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(storage.join(root, "missing.txt"))
    storage.delete_file(storage.join(root, "a.txt"))
    storage.delete_file(storage.join(root, "a.txt"))  # gone already: no error
    storage.delete_dir(storage.join(root, "sub"))
    assert not storage.exists(storage.join(root, "a.txt")) and not storage.exists(storage.join(root, "sub", "b.bin"))
    assert not any(storage.list_files(root, "*.tmp", recursive=True)), "no temp files left behind"


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
    trial_logs = [k for k in search_keys if k.startswith("trials/") and k.endswith(("metrics.jsonl", "best_model.pt"))]
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
