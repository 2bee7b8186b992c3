"""Segmentation backends behind one interface, chosen by `segment.backend` from a registry
(`hpa_ray.segment.registry`: a backend registers its config section and three steps).

Three steps, so that the CPU-heavy parts spread over every core instead of queueing behind
the actors that hold the models:
- `build_preprocess(cfg)`: image (4, H, W) uint8 → model input (4, h, w) uint8 at the working
  scale (`backends.nuclei`: `scale`, finer for small nuclei) (CPU tasks, with decoding; also
  shrinks what travels to the actors 16-fold);
- `build_backend(cfg).infer(inputs) -> raws`: batched, in the segmentation actors (may hold
  models on a GPU);
- `build_postprocess(cfg)`: raw → (h, w) int32 labels at the working scale (CPU tasks).

The built-in `classical` and `hpa` register below, importing their modules only when a step is
built (reading the registry stays cheap); a plugin backend is a module of its own
(`hpa_ray.core.plugins`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Protocol

import numpy as np

from hpa_ray.segment.backends.common import BackendError
from hpa_ray.segment.registry import BackendSpec, SegmentationBackend, backend_names, backend_spec, register_backend
from hpa_ray.segment.sections import ClassicalConfig, HpaConfig

__all__ = ["BackendError", "BackendSpec", "SegmentationBackend", "backend_names", "build_backend",
           "build_postprocess", "build_preprocess", "check_backend", "gpu_use", "register_backend",
           "wants_gpu"]  # fmt: skip


class SegmentSettings(Protocol):
    """What the steps read of a `hpa_ray.segment.config.SegmentConfig` (which imports this
    module to validate its backend: naming it here would tie the two in a cycle)."""

    backend: str
    plugins: Sequence[str]

    def section(self) -> Any: ...


def _spec_and_section(cfg: SegmentSettings):
    spec = backend_spec(cfg.backend, cfg.plugins)
    return spec, cfg.section()


def build_preprocess(cfg: SegmentSettings) -> Callable[[np.ndarray], np.ndarray]:
    """image (4, H, W) uint8 → model input (4, h, w) uint8 at the image's working scale."""
    spec, section = _spec_and_section(cfg)
    return spec.preprocess(section)


def build_backend(cfg: SegmentSettings) -> SegmentationBackend:
    """The backend named by cfg.backend, built from its config section."""
    spec, section = _spec_and_section(cfg)
    return spec.backend(section)


def build_postprocess(cfg: SegmentSettings) -> Callable[[np.ndarray], np.ndarray]:
    """raw (from infer) → (h, w) int32 cell labels; cheap to build, holds no model."""
    spec, section = _spec_and_section(cfg)
    return spec.postprocess(section)


def check_backend(cfg: SegmentSettings) -> None:
    """On the driver, before any task: what every actor would fail on (model files missing, not
    a model, a wrong SHA-256, a package missing) fails here, once, as a BackendError."""
    spec, section = _spec_and_section(cfg)
    spec.check(section)


def gpu_use(cfg: SegmentSettings) -> str:
    """never | if_available | always (`hpa_ray.segment.registry.GpuUse`)."""
    spec, section = _spec_and_section(cfg)
    return spec.gpu(section)


def wants_gpu(cfg: SegmentSettings) -> bool:
    """Whether the backend's actors should ask Ray for GPUs: `always`, or `if_available` when
    the cluster has GPUs (asking a cluster without any would wait forever)."""
    use = gpu_use(cfg)
    return use == "always" or (use == "if_available" and _cluster_gpus() > 0)


def _cluster_gpus() -> float:
    """GPUs the connected cluster has or can grow to (an autoscaling cluster's GPU node types)."""
    import ray

    from hpa_ray.runtime import session

    return session.cluster_resources().get("GPU", 0) if ray.is_initialized() else 0


# ---------------------------------------------------------------- the built-in backends


def _scaled(section) -> Callable[[np.ndarray], np.ndarray]:
    from hpa_ray.segment.backends.nuclei import to_working_scale

    return partial(to_working_scale, p=section)


def _classical_backend(section: ClassicalConfig):
    from hpa_ray.segment.backends.classical import ClassicalBackend

    return ClassicalBackend(section)


def _classical_postprocess(section: ClassicalConfig):
    from hpa_ray.segment.backends.classical import segment_cells

    return partial(segment_cells, p=section)


def _hpa_backend(section: HpaConfig):
    from hpa_ray.segment.backends.hpa import HpaBackend

    return HpaBackend(section)


def _hpa_postprocess(section: HpaConfig):
    from hpa_ray.segment.backends.hpa import raw_to_labels

    return partial(raw_to_labels, cfg=section)


def _hpa_check(section: HpaConfig) -> None:
    from hpa_ray.segment.backends.hpa import load_pickled_module

    load_pickled_module(section.nuclei_model, section.nuclei_sha256, "nuclei_model")
    load_pickled_module(section.cell_model, section.cell_sha256, "cell_model")


def _hpa_gpu(section: HpaConfig) -> str:
    return {"cpu": "never", "cuda": "always", "auto": "if_available"}[section.device]


register_backend(BackendSpec("classical", ClassicalConfig, _scaled, _classical_backend, _classical_postprocess))
register_backend(BackendSpec("hpa", HpaConfig, _scaled, _hpa_backend, _hpa_postprocess, check=_hpa_check,
                             gpu=_hpa_gpu, holds_model=True))  # fmt: skip
