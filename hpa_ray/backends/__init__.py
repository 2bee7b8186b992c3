"""Segmentation backends behind one interface, chosen by `segment.backend`.

A backend (`build_backend`) has `uses_gpu` and `infer(images) -> raws`, batched, run in the
segmentation actors (it may hold models on a GPU). Its post-processing (`build_postprocess`)
is a plain function `raw -> (h, w) int32 labels` at model scale, run in CPU tasks, so the
CPU-heavy part spreads over every core instead of queueing behind the actors.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Protocol

import numpy as np

from hpa_ray.config import SegmentConfig


class SegmentationBackend(Protocol):
    uses_gpu: bool

    def infer(self, images: list[np.ndarray]) -> list[np.ndarray]: ...


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


def wants_gpu(cfg: SegmentConfig) -> bool:
    """Whether the backend's actors should ask Ray for GPUs."""
    return cfg.backend == "hpa" and cfg.hpa.device != "cpu"
