"""The local autoscaling cluster (`python -m hpa_ray.cluster`), end to end.

It starts the cluster from cluster.yaml beside an unrelated Ray that must survive, submits the
segmentation (HPA's U-Net stand-ins in GPU actors) and the training of two folds (one GPU each)
through jobs/*.sh, terminates a GPU worker node mid-training, and reads back the autoscaler's own
events: GPU workers added from zero, the lost one replaced, all removed when idle.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hpa_ray.cluster.local import state_dir
from tests.helpers import process_group

ROOT = Path(__file__).resolve().parents[2]


CLUSTER = yaml.safe_load((ROOT / "cluster.yaml").read_text())


def _cli(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpa_ray.cluster", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def _job(script: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", f"jobs/{script}", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip


# Writes its tick count through a rename: the test reads the file while it is written,
# and a plain open(..., "w") shows an empty file in between.
_BYSTANDER = """
import sys, time, ray
from pathlib import Path
ray.init(num_cpus=1, include_dashboard=False)
@ray.remote
def tick(i):
    return i
ticks = Path(sys.argv[1])
scratch = ticks.with_suffix(".tmp")
for i in range(100000):
    scratch.write_text(str(ray.get(tick.remote(i))))
    scratch.replace(ticks)
    time.sleep(0.5)
"""


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if value := predicate():
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.mark.slow
def test_the_local_cluster_scales_gpu_workers_from_zero_replaces_a_lost_one_and_removes_them(tmp_path):
    from hpa_ray.cluster.sample import make_sample
    from hpa_ray.folds.config import FoldsConfig
    from hpa_ray.folds.stratify import make_folds, read_label_matrix

    name = f"test-{os.getpid()}"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # fmt: skip
    env.pop("RAY_ADDRESS", None)
    root = make_sample(tmp_path / "data", n_train=6, n_test=2, size=1024, seed=3)
    ids, y = read_label_matrix(root / "train.csv")
    folds = pd.DataFrame({"image_id": ids, "fold": make_folds(y, FoldsConfig(n_folds=2))})
    folds.to_csv(tmp_path / "folds.csv", index=False)
    ticks = tmp_path / "bystander"
    with process_group([sys.executable, "-c", _BYSTANDER, str(ticks)], env=env):
        _wait_for(lambda: ticks.exists(), 120, "a Ray of another program to start")
        up = _cli("up", "--name", name, "--idle-timeout-minutes", "0.2", "--dashboard-port", "0", env=env,
                  timeout=240)  # fmt: skip
        try:
            assert up.returncode == 0, up.stdout + up.stderr
            gpu_max = CLUSTER["available_node_types"]["gpu_worker"]["max_workers"]
            assert f"gpu_worker 0-{gpu_max} x {{CPU " in up.stdout and "GPU 1}" in up.stdout
            cluster = json.loads((state_dir(name) / "cluster.json").read_text())
            jobs_env = {**env, "RAY_ADDRESS": cluster["dashboard"], "RAY_AUTH_MODE": "token",
                        "HPA_RAY_PRESETS": "conf/local-cluster"}  # fmt: skip
            killed_at = _segment_and_train_with_a_node_lost(root, tmp_path, name, env, jobs_env) - cluster["started"]
            # Idle timeout 12 s, but a training's autoscaling request may outlive it by up to 200 s
            # (Ray Train registers it for 180 s; docs/lab/scaling.md)
            _wait_for(lambda: "active: 1 head\n  idle: none" in _cli("status", "--name", name, env=env).stdout, 330,
                      "every worker to be removed")  # fmt: skip
            timeline = json.loads(_cli("timeline", "--name", name, env=env).stdout)
            (tmp_path / "timeline.json").write_text(json.dumps(timeline, indent=2))
        finally:
            down = _cli("down", "--name", name, env=env)
        _assert_timeline(timeline, killed_at)
        assert down.returncode == 0 and "stopped" in down.stdout, down.stderr
        assert not state_dir(name).exists()
        assert not _processes_naming(str(state_dir(name))), "nothing of the cluster is left"
        before = int(ticks.read_text())
        _wait_for(lambda: int(ticks.read_text()) > before + 2, 30, "the other program's Ray to go on")


def _segment_and_train_with_a_node_lost(root: Path, tmp_path: Path, name: str, env: dict, jobs_env: dict) -> float:
    """→ when the GPU worker was killed (time.time())."""
    models = [f"hpa.nuclei_model={root}/models/dpn_unet_nuclei_v1.pth",
              f"hpa.cell_model={root}/models/dpn_unet_cell_3ch_v1.pth"]  # fmt: skip
    segment = _job("segment.sh", str(root / "train"), str(root / "train.csv"), str(tmp_path / "seg"), *models,
                   env=jobs_env)  # fmt: skip
    assert segment.returncode == 0, (segment.stdout + segment.stderr)[-3000:]
    manifest = pd.read_parquet(tmp_path / "seg" / "images.parquet")
    assert (manifest.status == "ok").all() and manifest.n_cells.sum() > 0
    assert (manifest.device == "cpu").all(), "a logical GPU: the U-Nets ran on the CPU"
    assert segment.stdout.count("torch sees none there") == 1, "said once"
    run = tmp_path / "run"
    cells = str(tmp_path / "seg" / "cells")
    epochs = 16  # a fold's epochs take ~0.2-4 s here: room to kill its node before it ends
    with process_group(["bash", "jobs/train.sh", cells, str(tmp_path / "folds.csv"), str(run), f"epochs={epochs}",
                        f"patience={epochs}"], cwd=ROOT, env=jobs_env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True) as train:  # fmt: skip
        # The node of a fold whose checkpoint Ray Train has registered (the other fold may still be
        # starting on a node of its own). A checkpoint reported but not yet registered by the
        # run's controller (it polls the workers) is not resumed from: that fold would start over.
        first = _wait_for(lambda: _first_registered(run), 300, "a fold's first registered checkpoint")
        killed_at = time.time()
        killed = _cli("kill-node", "gpu_worker", "--node-id", first["node_id"], "--name", name, env=env)
        assert killed.returncode == 0, killed.stderr
        out, _ = train.communicate(timeout=600)
    assert train.returncode == 0, out[-4000:]
    assert "its training worker was lost" in out and "resumed from the checkpoint of epoch" in out, out[-3000:]
    assert out.count("train on the CPU") == 1
    resumed = []
    for k in (0, 1):
        assert (run / f"fold-{k}" / "best" / "model.pt").exists()
        assert list(pd.read_csv(run / f"fold-{k}" / "metrics.csv").epoch) == list(range(epochs)), "no epoch lost"
        reports = [json.loads(line) for line in (run / f"fold-{k}" / "metrics.jsonl").read_text().splitlines()]
        resumed += [r for r in reports if r["resumed_from_epoch"] >= 0]
    assert resumed and resumed[0]["epoch"] == resumed[0]["resumed_from_epoch"] + 1, "from its last checkpoint"
    return killed_at


def _first_registered(run: Path) -> dict | None:
    """A fold's first epoch report (its node_id) once Ray Train has registered a checkpoint of it."""
    for k in (0, 1):
        path = run / f"fold-{k}" / "metrics.jsonl"
        snapshot = run / "ray_results" / f"{run.name}-fold-{k}" / "checkpoint_manager_snapshot.json"
        text = path.read_text() if path.exists() else ""
        with contextlib.suppress(OSError, ValueError):  # the snapshot may be half written
            if text.endswith("\n") and json.loads(snapshot.read_text())["checkpoint_results"]:
                return json.loads(text.splitlines()[0])
    return None


def _assert_timeline(timeline: dict, killed_at: float) -> None:
    events, nodes = timeline["events"], timeline["nodes"]
    gpu_adds = [e for e in events if e["action"] == "add" and e["node_type"] == "gpu_worker"]
    assert gpu_adds and sum(e["count"] for e in gpu_adds) >= 3, "segment's actor, two folds, then a replacement"
    assert any(e["action"] == "remove" and e["node_type"] == "gpu_worker" and e["reason"] == "idle" for e in events)
    gpu_nodes = [n for n in nodes if n["node_type"] == "gpu_worker"]
    lost = [n for n in gpu_nodes if n["end_reason"] and "idle" not in n["end_reason"]]
    assert len(lost) == 1, gpu_nodes
    assert lost[0]["started_s"] < killed_at < lost[0]["ended_s"]
    assert any(n["started_s"] > killed_at for n in gpu_nodes), "a GPU worker started after the loss: its replacement"
    workers = [n for n in nodes if n["node_type"] != "head"]
    assert workers and all(n["state"] == "DEAD" for n in workers), "scaled back to zero"
    assert all(e["t_s"] >= 0 for e in events) and events == sorted(events, key=lambda e: e["t_s"])


def _processes_naming(text: str) -> list[int]:
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(text in part for part in proc.info["cmdline"] or []):
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found
