"""Test helpers of more than one tier, or that Ray workers import: process groups, a worker
killed mid-training, a Ray Train loop whose score falls, a run of fold models, a page as
headless Chromium renders it, a fixture's files made once for all pytest-xdist workers, a
bench/ script as a module."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
import pytest


class KillWorkerOnce:
    """A `fit_fold` epoch hook: the rank-0 training worker process dies as `epoch` starts, once
    per fold directory (a marker file there remembers, and tells the test it happened)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def __call__(self, epoch: int, fold_dir: str) -> None:
        from hpa_ray.core import storage

        marker = storage.join(fold_dir, "injected_failure")
        if epoch == self.epoch and not storage.exists(marker):
            storage.write_text(marker, f"worker killed at epoch {epoch}\n")
            os._exit(1)


FALLING_VAL_MAP = (0.9, 0.5, 0.3, 0.2)  # epoch 0 the best, each later one worse


def falling_score_loop(config: dict) -> None:
    """A Ray Train loop of 4 epochs whose val_map falls (FALLING_VAL_MAP), each epoch reported
    with a checkpoint holding its number; the first run's worker dies as the last epoch starts."""
    import json
    import tempfile
    import time

    import ray.train

    resumed = -1
    if checkpoint := ray.train.get_checkpoint():
        with checkpoint.as_directory() as d:
            resumed = json.loads((Path(d) / "epoch.json").read_text())["epoch"]
    for epoch in range(resumed + 1, len(FALLING_VAL_MAP)):
        if epoch == len(FALLING_VAL_MAP) - 1 and resumed < 0:
            time.sleep(3)  # the controller registers epoch 2's checkpoint first (it polls)
            os._exit(1)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "epoch.json").write_text(json.dumps({"epoch": epoch}))
            metrics = {"epoch": epoch, "val_map": FALLING_VAL_MAP[epoch], "resumed_from_epoch": resumed}
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


@contextmanager
def process_group(args: list[str], **popen) -> Iterator[subprocess.Popen]:
    """Popen in a session of its own; on leaving (an assertion failed or a wait timed out
    included) the whole group is killed: the Ray it started, its workers, its children."""
    proc = subprocess.Popen(args, start_new_session=True, **popen)
    try:
        yield proc
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_group(args: list[str], timeout: float, **popen) -> subprocess.CompletedProcess:
    """`subprocess.run(args, capture_output=True, text=True)` whose whole process group is
    killed when it ends or times out (subprocess.run kills only the child it started)."""
    with process_group(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen) as proc:
        out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _chromium(profile: Path) -> list[str]:
    """Headless Chromium's command line (Debian's `chromium`; CI installs it, elsewhere the
    calling test skips)."""
    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium package")
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    return [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--virtual-time-budget=10000"]  # fmt: skip


def chromium_dom(url: str, profile: Path) -> str:
    """The DOM of `url` after headless Chromium has run its scripts."""
    return subprocess.run([*_chromium(profile), "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout


def chromium_screenshot(url: str, profile: Path, png: Path, size: tuple[int, int] = (1280, 900)) -> np.ndarray:
    """`url` rendered by headless Chromium (its scripts run) → png, read back as (H, W, 3) uint8."""
    import cv2

    subprocess.run([*_chromium(profile), f"--window-size={size[0]},{size[1]}", "--hide-scrollbars",
                    f"--screenshot={png}", url], capture_output=True, timeout=120)  # fmt: skip
    assert png.exists(), f"chromium wrote no screenshot of {url}"
    return cv2.imread(str(png))


def loaded_images(dom: str) -> tuple[int, list[str]]:
    """→ (how many <img> the report page has, the tags of those that did not load)."""
    images = re.findall(r"<img [^>]*>", dom)
    return len(images), [tag for tag in images if 'data-state="loaded"' not in tag]


RUN_CROP = 32  # the crop size a run of _make_run segments at


def _make_run(run_dir, folds=2, image_size=None, method="cell"):
    """A run as `train` leaves it: fold-K/best/model.pt + fold-K/config.yaml + segment_config.yaml
    (weights: the tiny model's random initialisation, one seed per fold)."""
    import torch

    from hpa_ray.core.config import write_resolved
    from hpa_ray.segment.config import SegmentConfig
    from hpa_ray.train.config import TrainConfig
    from hpa_ray.train.model import build_model

    for k in range(folds):
        cfg = TrainConfig(model="tiny", seed=k, image_size=image_size, method=method)
        torch.manual_seed(k)
        (run_dir / f"fold-{k}" / "best").mkdir(parents=True)
        torch.save(build_model(cfg).state_dict(), run_dir / f"fold-{k}" / "best" / "model.pt")
        write_resolved(cfg, run_dir / f"fold-{k}" / "config.yaml")
    write_resolved(SegmentConfig(crop_size=RUN_CROP), run_dir / "segment_config.yaml")
    return run_dir


# The report's figures → (width, height) in pixels: figsize × DPI of report_figures
REPORT_SIZES = {
    "labels_per_class.png": (900, 600),
    "labels_cooccurrence.png": (900, 800),
    "labels_per_image.png": (600, 400),
    "cells_per_image.png": (600, 400),
    "outlines_0.png": (500, 500),
    "folds_positives.png": (1000, 500),
    "training_curves.png": (1100, 400),
    "training_class_ap.png": (900, 700),
    "evaluation_ap.png": (900, 700),
}


def made_once(tmp_path_factory, name: str, make: Callable[[Path], object]) -> Path:
    """The directory `name` that `make(directory)` fills, made once per test session even when
    pytest-xdist runs it in several worker processes: the first worker to ask makes it under the
    run's shared temp directory while holding a file lock; the others wait, then read it. A
    `make` that raises leaves nothing behind, so the next worker to ask tries again."""
    from filelock import FileLock

    from tests.conftest import PARALLEL

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if PARALLEL else base  # xdist: .../popen-gwN
    directory, done = shared / name, shared / f"{name}.done"
    with FileLock(shared / f"{name}.lock"):
        if not done.exists():
            shutil.rmtree(directory, ignore_errors=True)  # a failed make's leftovers
            directory.mkdir()
            make(directory)
            done.touch()
    return directory


def bench_module(name: str):
    """bench/NAME.py as a module (bench/ is not a package), registered in sys.modules under NAME
    (a dataclass looks its module up there)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
