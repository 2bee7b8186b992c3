"""The e2e tier: the demo, multi-node, the local autoscaling cluster, Ray jobs, the S3 pipeline of
every stage, the GPU check. Its fixture: the quick demo, run once for the session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """`python -m hpa_ray demo --quick` run once (minutes on 2 cores): the finished process and
    its output directory, for the tests of the command and of what reads its outputs."""
    from tests.helpers import run_group

    out = tmp_path_factory.mktemp("quick_demo") / "demo"
    command = [sys.executable, "-m", "hpa_ray", "demo", "--quick", "--out", str(out)]
    return run_group(command, timeout=1500, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}), out
