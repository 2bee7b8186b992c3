"""A fold trained on a CUDA GPU through Ray Train (runs on the device machine; skipped elsewhere)."""

from __future__ import annotations

import pytest

from hpa_ray.segment.config import SegmentConfig
from hpa_ray.synth.config import SynthConfig

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("method", ["cell", "bag"])
def test_a_fold_trains_on_cuda_through_ray_train(ray_local, tmp_path, method):
    """Ray Train hands the worker batches already on CUDA: training and validation take them."""
    import pandas as pd

    from hpa_ray.folds.config import FoldsConfig
    from hpa_ray.folds.stratify import make_folds, read_label_matrix
    from hpa_ray.segment.stage import run_segment
    from hpa_ray.synth.generate import generate
    from hpa_ray.train.config import TrainConfig
    from hpa_ray.train.fit import fit_fold

    data = generate(tmp_path / "synth", n_images=6, seed=3, cfg=SynthConfig(size=1024))
    run_segment(data / "images", tmp_path / "seg", SegmentConfig(crop_size=32), data / "labels.csv")
    ids, y = read_label_matrix(data / "labels.csv")
    folds = pd.DataFrame({"image_id": ids, "fold": make_folds(y, FoldsConfig(n_folds=3))})
    folds.to_csv(tmp_path / "folds.csv", index=False)
    cfg = TrainConfig(model="tiny", method=method, bag_size=4, batch_size=16, epochs=2, use_gpu=True,
                      gpus_per_worker=0.5, cpus_per_worker=0.5)  # fmt: skip
    best = fit_fold(tmp_path / "seg" / "cells", tmp_path / "folds.csv", 0, tmp_path / "run", cfg)
    metrics = pd.read_csv(tmp_path / "run" / "fold-0" / "metrics.csv")
    assert list(metrics.epoch) == [0, 1] and 0 < best["val_map"] <= 1
