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

ROOT = Path(__file__).resolve().parents[1]
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
                            text=True, timeout=60)  # fmt: skip
    assert "SUCCEEDED" in listed.stdout
    manifest = pd.read_parquet(out / "images.parquet")
    assert len(manifest) == 6 and (manifest.status == "ok").all() and manifest.n_cells.sum() > 0
    # The script ends with the stage's own status: 2 for unusable inputs (ray job submit says 1).
    folds = subprocess.run(["bash", "jobs/folds.sh", str(tmp_path / "missing.csv"), str(tmp_path / "folds.csv")],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert folds.returncode == 2 and "missing.csv" in folds.stdout + folds.stderr, (folds.stdout + folds.stderr)[-3000:]


def _stand_in_stages(directory: Path, statuses: dict[str, int]) -> Path:
    """Stage scripts that record their call (name and arguments) and end with the given exit status."""
    directory.mkdir()
    for name in ("segment", "folds", "tune", "train", "predict"):
        script = directory / f"{name}.sh"
        record = f'echo {name} "$@" >> "{directory}/calls"'
        script.write_text(f"#!/usr/bin/env bash\n{record}\nexit {statuses.get(name, 0)}\n")
        script.chmod(0o755)
    return directory


@pytest.mark.parametrize(
    "statuses, exit_status, calls, said",
    [
        ({}, 0, ["segment", "folds", "tune", "train", "predict"], "done"),
        ({"segment": 3}, 3, ["segment", "folds", "tune", "train", "predict"], "segment: some images failed"),
        ({"predict": 3}, 3, ["segment", "folds", "tune", "train", "predict"], "predict: some images failed"),
        ({"segment": 2}, 2, ["segment"], "segment: unusable inputs or configuration"),
        ({"tune": 3}, 3, ["segment", "folds", "tune"], "tune failed (exit 3); stopping"),
        ({"train": 1}, 1, ["segment", "folds", "tune", "train"], "train failed (exit 1); stopping"),
    ],
)
def test_pipeline_goes_on_after_3_and_stops_after_2_or_other(tmp_path, statuses, exit_status, calls, said):
    stages = _stand_in_stages(tmp_path / "stages", statuses)
    run = subprocess.run(["bash", "jobs/pipeline.sh", str(tmp_path / "root")], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env={**os.environ, "HPA_RAY_STAGES": str(stages)})  # fmt: skip
    assert run.returncode == exit_status, run.stderr
    lines = (stages / "calls").read_text().splitlines()
    assert [line.split()[0] for line in lines] == calls and said in run.stderr, run.stderr
    root = tmp_path / "root"
    assert lines[0] == f"segment {root}/train {root}/train.csv {root}/out/segment"  # the preset: segment.sh's
    if len(lines) == 5:  # each stage reads what the one before it wrote
        assert lines[3].endswith(f"{root}/out/runs/b2 --config {root}/out/search/best_config.yaml")
        out = f"{root}/out"
        assert lines[4] == f"predict {root}/test {out}/runs/b2 {out}/submission.csv --ids {root}/sample_submission.csv"


@pytest.mark.parametrize("script, args, module", [
    ("segment.sh", ["IN", "L.csv", "OUT", "crop_size=64"], "hpa_ray.segment"),
    ("folds.sh", ["L.csv", "F.csv", "--n-folds", "3"], "hpa_ray.folds"),
    ("tune.sh", ["C", "F.csv", "S", "num_samples=2"], "hpa_ray.tune"),
    ("train.sh", ["C", "F.csv", "R"], "hpa_ray.train"),
    ("predict.sh", ["IN", "R", "S.csv", "--ids", "I.csv"], "hpa_ray.predict"),
])  # fmt: skip
def test_each_job_script_submits_its_stage_with_flags_the_stage_knows(tmp_path, script, args, module):
    """`ray job submit` stood in by a script that records its arguments: the job is the stage's
    module, from the working directory, with flags that module's --help lists."""
    (tmp_path / "bin").mkdir()
    ray = tmp_path / "bin" / "ray"
    ray.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "{tmp_path}/submitted"\n')
    ray.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    run = subprocess.run(["bash", f"jobs/{script}", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stderr
    submitted = (tmp_path / "submitted").read_text().splitlines()
    assert submitted[:2] == ["job", "submit"] and "--working-dir" in submitted
    job = submitted[submitted.index("--") + 1 :]
    assert job[:3] == ["python", "-m", module] and job[-len(args[3:]) or len(job) :] == args[3:]
    help_text = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                               timeout=120).stdout  # fmt: skip
    flags = {a for a in job if a.startswith("--")}
    assert flags and all(flag in help_text for flag in flags), (flags, help_text)


def test_pipeline_takes_the_presets_and_the_unet_files_from_the_environment(tmp_path):
    """HPA_RAY_MODELS points segment at HPA's two U-Net files; HPA_RAY_PRESETS picks each stage's
    preset (conf/local-cluster for the local autoscaling cluster)."""
    (tmp_path / "bin").mkdir()
    ray = tmp_path / "bin" / "ray"
    record = f'printf "%s\\n" "$@" >> "{tmp_path}/submitted"\necho ---- >> "{tmp_path}/submitted"'
    ray.write_text(f"#!/usr/bin/env bash\n{record}\n")
    ray.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "HPA_RAY_MODELS": "/m",
           "HPA_RAY_PRESETS": "conf/local-cluster"}  # fmt: skip
    run = subprocess.run(["bash", "jobs/pipeline.sh", "/r"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stderr
    jobs = (tmp_path / "submitted").read_text().split("----\n")[:-1]
    segment = jobs[0].splitlines()
    assert segment[-2:] == ["hpa.nuclei_model=/m/dpn_unet_nuclei_v1.pth", "hpa.cell_model=/m/dpn_unet_cell_3ch_v1.pth"]
    configs = [job.splitlines()[job.splitlines().index("--config") + 1] for job in jobs]
    assert configs == [f"conf/local-cluster/{stage}.yaml" for stage in ("segment", "folds", "tune", "train", "predict")]
    assert all(Path(ROOT, c).exists() for c in configs)
