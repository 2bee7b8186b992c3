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
        command = [sys.executable, "-m", "hpa_ray", "demo", "--quick", "--out", str(directory / "demo")]
        done = run_group(command, timeout=1500, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
        process = {"args": done.args, "returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr}
        (directory / "process.json").write_text(json.dumps(process))

    directory = made_once(tmp_path_factory, "quick_demo", run)
    return subprocess.CompletedProcess(**json.loads((directory / "process.json").read_text())), directory / "demo"
