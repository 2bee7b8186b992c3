"""Shared fixtures: the real HPA material beside the project, small synthetic sets, one Ray."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

ROOT = Path(__file__).resolve().parents[1]
# The real HPA material (the task's train.csv and sample_submission.csv, hpa-real/images and
# hpa-real/masks): beside the checkout, or wherever HPA_RAY_SHARED_DATA points.
SHARED_DATA = Path(os.environ.get("HPA_RAY_SHARED_DATA", ROOT.parent / "shared" / "data"))
_SHARED_NEEDS = ("train.csv", "sample_submission.csv", "hpa-real/images", "hpa-real/masks")
HPA_REAL = SHARED_DATA / "hpa-real"


def real_image_ids() -> list[str]:
    return sorted({p.name.rsplit("_", 1)[0] for p in (HPA_REAL / "images").glob("*_blue.png")})


@pytest.fixture(scope="session")
def shared_data() -> Path:
    missing = [name for name in _SHARED_NEEDS if not (SHARED_DATA / name).exists()]
    if missing:
        pytest.skip(f"real HPA material not found: {SHARED_DATA} lacks {', '.join(missing)} "
                    "(set HPA_RAY_SHARED_DATA to the directory holding the task's train.csv, "
                    "sample_submission.csv and hpa-real/{images,masks})")  # fmt: skip
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_local():
    """One embedded Ray for the whole test session (starting one costs seconds)."""
    import ray

    from hpa_ray.runtime import session as _ray

    _ray.init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """`python -m hpa_ray demo --quick` run once (minutes on 2 cores): the finished process and
    its output directory, for the tests of the command and of what reads its outputs."""
    from tests.helpers import run_group

    out = tmp_path_factory.mktemp("quick_demo") / "demo"
    command = [sys.executable, "-m", "hpa_ray", "demo", "--quick", "--out", str(out)]
    return run_group(command, timeout=1500, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}), out


@pytest.fixture(scope="session")
def synth_set(tmp_path_factory) -> Path:
    """Six labelled 1024² synthetic images (about 30 cells) with truth."""
    from hpa_ray.synth.config import SynthConfig
    from hpa_ray.synth.generate import generate

    return generate(tmp_path_factory.mktemp("synth"), n_images=6, seed=7, cfg=SynthConfig(size=1024))


def pytest_collection_modifyitems(config, items):
    """`gpu` tests run only where CUDA is available (the device machine), else they skip."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
