"""A separate Ray head (`ray start --head` on 127.0.0.1) and `ray job submit --working-dir .` of
the segmentation stage, as jobs/segment.sh does it on a cluster."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from hpa_ray.runtime.session import free_port

ROOT = Path(__file__).resolve().parents[2]


RAY = str(Path(sys.executable).with_name("ray"))


def _stop_head(temp_dir: Path) -> None:
    """Kill only this head's processes (`ray stop` would also stop the tests' own Ray)."""
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(temp_dir) in part for part in proc.info["cmdline"] or []):
                proc.send_signal(signal.SIGKILL)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue


@pytest.fixture
def head(tmp_path):
    # Token authentication is Ray's default; the job client must be told to use it.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # `ray` of this Python  # fmt: skip
    env.pop("RAY_ADDRESS", None)
    temp_dir = Path(f"/tmp/rayjobs-{os.getpid()}")  # short: Ray's socket paths have a length limit
    port, dashboard = free_port(), free_port()
    # Every fixed default port on its own free one: the tests' own Ray (or any other on this
    # machine) holds the dashboard agent's 52365, and a head whose agent cannot bind answers
    # every submission with "No available agent to submit job".
    agent_ports = [f"--{name}={free_port()}" for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
        "metrics-export-port", "ray-client-server-port")]  # fmt: skip
    try:  # a failed or timed-out start may have left some of the head's processes
        started = subprocess.run(
            [RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--temp-dir={temp_dir}",
             "--include-dashboard=true", "--disable-usage-stats", *agent_ports],
            env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr[-2000:]
        yield {"env": env, "address": f"http://127.0.0.1:{dashboard}"}
    finally:
        _stop_head(temp_dir)
        time.sleep(1)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_segmentation_job_on_a_separate_head(head, synth_set, tmp_path):
    out = tmp_path / "seg"
    # The base configs as the presets (conf/cluster's segment preset runs HPA's U-Nets on GPUs).
    env = {**head["env"], "RAY_ADDRESS": head["address"], "HPA_RAY_PRESETS": "conf"}
    job = subprocess.run(
        ["bash", "jobs/segment.sh", str(synth_set / "images"), str(synth_set / "labels.csv"), str(out), "crop_size=32"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]
    assert "succeeded" in job.stdout.lower()
    listed = subprocess.run([RAY, "job", "list", "--address", head["address"]], env=env, capture_output=True,
                            text=True, timeout=180)  # fmt: skip
    assert "SUCCEEDED" in listed.stdout
    manifest = pd.read_parquet(out / "images.parquet")
    assert len(manifest) == 6 and (manifest.status == "ok").all() and manifest.n_cells.sum() > 0
    # The script ends with the stage's own status: 2 for unusable inputs (ray job submit says 1).
    folds = subprocess.run(["bash", "jobs/folds.sh", str(tmp_path / "missing.csv"), str(tmp_path / "folds.csv")],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert folds.returncode == 2 and "missing.csv" in folds.stdout + folds.stderr, (folds.stdout + folds.stderr)[-3000:]
