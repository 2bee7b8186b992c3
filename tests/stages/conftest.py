"""The stages tier: tests of one or more stages on a local Ray (in this process or stage CLIs in
subprocesses). Its fixtures: one Ray for the session, and cells segmented from synthetic images."""

from __future__ import annotations

from pathlib import Path

import pytest

CROP = 64  # the crop size of `cells`


@pytest.fixture(scope="session")
def ray_local():
    """One embedded Ray for the whole test session (starting one costs seconds)."""
    import ray

    from hpa_ray.runtime import session as _ray

    _ray.init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def cells(ray_local, tmp_path_factory):
    """~200 labelled cells from 16 synthetic 2048² images, in 3 image-level folds; made once for
    the train and tune tests (once for all xdist workers; read only: each test trains into its
    own tmp_path)."""
    from tests.helpers import made_once

    root = made_once(tmp_path_factory, "train", _segment_synthetic_cells)
    return {"cells": root / "seg" / "cells", "folds": root / "folds.csv", "root": root}


def _segment_synthetic_cells(root: Path) -> None:
    from hpa_ray.folds.config import FoldsConfig
    from hpa_ray.folds.stratify import write_folds
    from hpa_ray.segment.config import SegmentConfig
    from hpa_ray.segment.stage import run_segment
    from hpa_ray.synth.config import SynthConfig
    from hpa_ray.synth.generate import generate

    data = generate(root / "synth", n_images=16, seed=4, cfg=SynthConfig(size=2048))
    run_segment(data / "images", root / "seg", SegmentConfig(crop_size=CROP), data / "labels.csv")
    write_folds(data / "labels.csv", root / "folds.csv", FoldsConfig(n_folds=3))
