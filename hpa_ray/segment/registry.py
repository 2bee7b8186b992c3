"""The segmentation backend registry: name → config section and three steps.

A backend registers a `BackendSpec` (`register_backend`); `SegmentConfig.backend` must name a
registered one, the section `segment.NAME` is validated by its `config` model, and the stage
builds its steps through `hpa_ray.segment.backends.build_{preprocess,backend,postprocess}`.
Adding one is one module calling `register_backend` (named in `segment.plugins` unless it is
built in) plus its tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

# never: CPU only; if_available: GPUs when the cluster has them, else CPU (with a warning);
# always: its actors ask Ray for GPUs (a cluster without any would wait for one).
GpuUse = Literal["never", "if_available", "always"]


class SegmentationBackend(Protocol):
    def infer(self, images: list[np.ndarray]) -> list[np.ndarray]: ...


def _nothing(section: Any) -> None:
    return None


def _never(section: Any) -> GpuUse:
    return "never"


@dataclass(frozen=True)
class BackendSpec:
    """Each callable takes the backend's validated config section."""

    name: str
    config: type  # pydantic model of its section, `segment.NAME`
    # section → (image (4, H, W) uint8 → model input (4, h, w) uint8); CPU tasks, with decoding
    preprocess: Callable[[Any], Callable[[np.ndarray], np.ndarray]]
    # section → object whose infer(list of model inputs) → list of raws; in actors when it holds a model
    backend: Callable[[Any], SegmentationBackend]
    # section → (raw → (h, w) int32 cell labels at model scale); CPU tasks
    postprocess: Callable[[Any], Callable[[np.ndarray], np.ndarray]]
    check: Callable[[Any], None] = _nothing  # on the driver, before any task: raise BackendError
    gpu: Callable[[Any], GpuUse] = _never
    holds_model: bool = False  # infer in actors that keep it (infer_on: auto); else fused into CPU tasks


_REGISTRY: dict[str, BackendSpec] = {}


def register_backend(spec: BackendSpec) -> BackendSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"segmentation backend {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def backend_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def backend_spec(name: str, plugins: Iterable[str] = ()) -> BackendSpec:
    from hpa_ray.core.plugins import import_plugins

    import_plugins(plugins)
    if name not in _REGISTRY:
        raise ValueError(f"unknown segmentation backend {name!r}; registered: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]
