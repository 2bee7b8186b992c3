"""Fixtures of more than one tier: the real HPA material beside the project, a small synthetic set,
a local S3, a run of fold models; and the tier markers (tests/unit, tests/stages, tests/e2e).
Each tier's own fixtures are in its conftest.py."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# Each pytest-xdist worker gives Ray a temp directory of its own: a cluster that a test starts
# with ray.cluster_utils writes its address there, and the plain ray.init() of a test's "other
# program" in the other worker would join that cluster instead of starting its own.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1…: this process is an xdist worker
PARALLEL = bool(_WORKER)
if PARALLEL:
    os.environ["RAY_TMPDIR"] = os.path.join(tempfile.gettempdir(), f"ray-{_WORKER}-{os.getppid()}")

ROOT = Path(__file__).resolve().parents[1]
# The real HPA material (the task's train.csv and sample_submission.csv, hpa-real/images and
# hpa-real/masks): beside the checkout, or wherever HPA_RAY_SHARED_DATA points.
SHARED_DATA = Path(os.environ.get("HPA_RAY_SHARED_DATA", ROOT.parent / "shared" / "data"))
_SHARED_NEEDS = ("train.csv", "sample_submission.csv", "hpa-real/images", "hpa-real/masks")
HPA_REAL = SHARED_DATA / "hpa-real"
BUCKET = "hpa-test"  # the bucket of s3_env's local S3


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
def synth_set(tmp_path_factory) -> Path:
    """Six labelled 1024² synthetic images (about 30 cells) with truth."""
    from hpa_ray.synth.config import SynthConfig
    from hpa_ray.synth.generate import generate
    from tests.helpers import made_once

    return made_once(tmp_path_factory, "synth", lambda d: generate(d, n_images=6, seed=7, cfg=SynthConfig(size=1024)))


@pytest.fixture(scope="module")
def s3_env():
    """A local S3 server (moto's) with one bucket; its settings in os.environ for the module's tests."""
    import boto3
    from moto.server import ThreadedMotoServer

    from hpa_ray.core import storage

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


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run as `train` leaves it (tests.helpers._make_run), one per test module."""
    from tests.helpers import _make_run

    return _make_run(tmp_path_factory.mktemp("run"))


TIERS = ("unit", "stages", "e2e")  # tests/<tier>/: the marker of every test there


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    """Each test is marked with its tier (`unit`, `stages` or `e2e`: the directory it is in under
    tests/). In one process the tiers run in that order: the quick ones first, and the unit tier
    before any test has started a Ray. Under pytest-xdist (`-n 2`: two workers, whole modules
    each, `--dist loadfile`) the longest go first, so that no worker is left with
    a long module at the end: e2e, then unit (still before any stages test of that worker
    starts its Ray), then stages; within a tier, modules with a `slow` test first. `gpu` tests
    run only where CUDA is available (the device machine), else they skip."""
    tests_dir = Path(__file__).resolve().parent
    tiers = ("e2e", "unit", "stages") if PARALLEL else TIERS
    tier_of = {}
    for item in items:
        path = Path(item.path).resolve()
        tier = path.relative_to(tests_dir).parts[0] if path.is_relative_to(tests_dir) else None
        if tier in TIERS:
            item.add_marker(tier)
        tier_of[item.nodeid] = tiers.index(tier) if tier in tiers else len(tiers)
    slow_modules = {item.path for item in items if "slow" in item.keywords} if PARALLEL else set()
    # stable: each module's tests stay together, in their order
    items.sort(key=lambda item: (tier_of[item.nodeid], item.path not in slow_modules))
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


@pytest.hookimpl(trylast=True)  # after the test's own fixtures are torn down
def pytest_runtest_teardown(item, nextitem):
    """This process's Ray (the stages tier's `ray_local`, or one a stage function started) stops
    after the stages tier's last test: the e2e tests start Rays of their own in subprocesses, and
    this one would idle through their ~25 minutes with its workers' memory and 5% of the CPUs
    (`bench/idle_ray_cpu.py`; a CPU-bound job beside it was not measurably slower, so this is
    tidiness, not speed)."""
    if "stages" not in item.keywords or (nextitem is not None and "stages" in nextitem.keywords):
        return
    items = item.session.items
    if any("stages" in later.keywords for later in items[items.index(item) + 1 :]):
        return  # the tiers mixed (--ff, --nf): a later stages test still needs this Ray
    from hpa_ray.runtime.session import shutdown_ray

    shutdown_ray()


def pytest_sessionfinish(session):
    """A worker's Ray temp directory goes with it (its Rays are stopped by now)."""
    if PARALLEL:
        shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)
