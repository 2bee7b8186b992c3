"""Segmentation backends behind one interface, chosen by `segment.backend`.

Three steps, so that the CPU-heavy parts spread over every core instead of queueing behind
the actors that hold the models:
- `build_preprocess(cfg)`: image (4, H, W) uint8 → model input (4, h, w) uint8 at `scale`
  (CPU tasks, with decoding; also shrinks what travels to the actors 16-fold);
- `build_backend(cfg).infer(inputs) -> raws`: batched, in the segmentation actors (may hold
  models on a GPU);
- `build_postprocess(cfg)`: raw → (h, w) int32 labels at model scale (CPU tasks).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Protocol

import numpy as np

from hpa_ray.backends._common import BackendError, downscale
from hpa_ray.config import SegmentConfig

__all__ = ["BackendError", "build_backend", "build_postprocess", "build_preprocess", "check_backend", "wants_gpu"]


class SegmentationBackend(Protocol):
    uses_gpu: bool

    def infer(self, images: list[np.ndarray]) -> list[np.ndarray]: ...


def build_preprocess(cfg: SegmentConfig) -> Callable[[np.ndarray], np.ndarray]:
    """image (4, H, W) uint8 → model input (4, h, w) uint8, h = round(H * scale)."""
    return partial(downscale, scale=cfg.hpa.scale if cfg.backend == "hpa" else cfg.classical.scale)


def build_backend(cfg: SegmentConfig) -> SegmentationBackend:
    """The backend named by cfg.backend, built from its config section."""
    if cfg.backend == "hpa":
        from hpa_ray.backends.hpa import HpaBackend

        return HpaBackend(cfg.hpa)
    from hpa_ray.backends.classical import ClassicalBackend

    return ClassicalBackend(cfg.classical)


def build_postprocess(cfg: SegmentConfig) -> Callable[[np.ndarray], np.ndarray]:
    """raw (from infer) → (h, w) int32 cell labels; cheap to build, holds no model."""
    if cfg.backend == "hpa":
        from hpa_ray.backends.hpa import raw_to_labels

        return partial(raw_to_labels, cfg=cfg.hpa)
    from hpa_ray.backends.classical import segment_cells

    return partial(segment_cells, p=cfg.classical)


def check_backend(cfg: SegmentConfig) -> None:
    """On the driver, before any task: what every actor would fail on (model files missing, not
    a model, a wrong SHA-256, a package missing) fails here, once, as a BackendError."""
    if cfg.backend == "hpa":
        from hpa_ray.backends.hpa import load_pickled_module

        load_pickled_module(cfg.hpa.nuclei_model, cfg.hpa.nuclei_sha256, "nuclei_model")
        load_pickled_module(cfg.hpa.cell_model, cfg.hpa.cell_sha256, "cell_model")


def wants_gpu(cfg: SegmentConfig) -> bool:
    """Whether the backend's actors should ask Ray for GPUs: `hpa` on `cuda`, or on `auto` when
    the cluster has GPUs (asking a cluster without any would wait forever)."""
    if cfg.backend != "hpa" or cfg.hpa.device == "cpu":
        return False
    return cfg.hpa.device == "cuda" or _cluster_gpus() > 0


def _cluster_gpus() -> float:
    import ray

    return ray.cluster_resources().get("GPU", 0) if ray.is_initialized() else 0
