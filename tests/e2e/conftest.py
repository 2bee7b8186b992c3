"""The e2e tier: the demo, multi-node, the local autoscaling cluster, Ray jobs, the S3 pipeline of
every stage, the GPU check. Its fixture: the quick demo, run once for the session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """`python -m hpa_ray demo --quick` run once (minutes on 2 cores; once for all xdist workers):
    the finished process and its output directory, for the tests of the command and of what
    reads its outputs."""
    from tests.helpers import made_once, run_group

    def run(directory: Path) -> None:
        _an_earlier_demo(directory / "demo")  # replaced by this run (test_cli checks it)
        command = [sys.executable, "-m", "hpa_ray", "demo", "--quick", "--out", str(directory / "demo")]
        done = run_group(command, timeout=1500, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
        process = {"args": done.args, "returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr}
        (directory / "process.json").write_text(json.dumps(process))

    directory = made_once(tmp_path_factory, "quick_demo", run)
    return subprocess.CompletedProcess(**json.loads((directory / "process.json").read_text())), directory / "demo"


def _an_earlier_demo(out: Path) -> None:
    """What a demo of another seed and size leaves: a run of it in the same --out resumed its
    fold with the other settings and failed, and mixed the other seed's images into the cells.
    Beside it a file of the user's, and the earlier log, which the demo keeps."""
    from hpa_ray.core.config import write_resolved
    from hpa_ray.train.config import TrainConfig

    (out / "data" / "train" / "images").mkdir(parents=True)
    (out / "data" / "train" / "images" / "synth-0009-00000_red.png").write_bytes(b"earlier")
    write_resolved(TrainConfig(model="small", epochs=24), out / "runs" / "demo" / "fold-0" / "config.yaml")
    (out / "demo.json").write_text('{"seed": 9, "quick": false, "model": null}\n')
    (out / "notes.txt").write_text("mine\n")
    (out / "logs").mkdir()
    (out / "logs" / "earlier.log").write_text("earlier\n")
