"""The hpa backend on a CUDA GPU (runs on the device machine; skipped elsewhere)."""

from __future__ import annotations

import numpy as np
import pytest

from hpa_ray.segment.backends import build_backend, build_postprocess, build_preprocess
from hpa_ray.segment.backends.standin import save_standin
from hpa_ray.segment.config import SegmentConfig
from hpa_ray.segment.sections import HpaConfig
from hpa_ray.synth.config import SynthConfig
from hpa_ray.synth.generate import make_image

pytestmark = pytest.mark.gpu


def test_hpa_backend_on_cuda_batches_and_agrees_with_cpu(tmp_path):
    nuclei = save_standin(str(tmp_path / "n.pth"), width=16)
    cell = save_standin(str(tmp_path / "c.pth"), width=16)
    rng = np.random.default_rng(0)
    prep = build_preprocess(SegmentConfig(backend="hpa"))
    images = [prep(make_image(2048, SynthConfig(size=2048), rng).image) for _ in range(4)]

    def backend(device):
        return build_backend(
            SegmentConfig(backend="hpa", hpa=HpaConfig(nuclei_model=nuclei, cell_model=cell, device=device))
        )

    gpu, cpu = backend("auto"), backend("cpu")
    assert gpu.uses_gpu and gpu.device.type == "cuda"
    passes = []
    gpu.nuclei_model.register_forward_hook(lambda *_: passes.append(1))
    on_gpu, on_cpu = gpu.infer(images), cpu.infer(images)
    assert len(passes) == 1, "four same-size images in one forward pass"
    for a, b in zip(on_gpu, on_cpu):
        assert a.shape == (6, 512, 512)
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 2
    cfg = SegmentConfig(backend="hpa", hpa=HpaConfig(device="cuda"))
    assert build_postprocess(cfg)(on_gpu[0]).max() >= 1


def test_predict_ensemble_on_cuda_agrees_with_cpu(tmp_path):
    import json

    import torch

    from hpa_ray.predict.run import Ensemble
    from hpa_ray.train.config import TrainConfig
    from hpa_ray.train.model import build_model

    cfg = TrainConfig(model="tiny")
    torch.save(build_model(cfg).state_dict(), tmp_path / "m.pt")
    run_json = json.dumps({"paths": [str(tmp_path / "m.pt")], "train": cfg.model_dump()})
    crops = np.random.default_rng(0).integers(0, 255, (70, 4, 64, 64), dtype=np.uint8)
    on_gpu = Ensemble(run_json, tta=True, device="cuda")(crops)
    on_cpu = Ensemble(run_json, tta=True, device="cpu")(crops)
    assert np.abs(on_gpu - on_cpu).max() < 1e-3


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
