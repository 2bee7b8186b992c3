"""The hpa backend and predict's ensemble on a CUDA GPU (runs on the device machine; skipped elsewhere)."""

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
