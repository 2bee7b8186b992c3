"""Plugin modules: user code that registers segmentation backends and backbones.

A plugin is any importable module that calls `hpa_ray.segment.backends.register_backend` or
`@hpa_ray.train.backbones.register_backbone` when imported. A config names it (`segment.plugins`,
`train.plugins`); validating that config imports it, in every process that does, so the
driver, the Ray workers and predict's actors all see the same registries (the config travels
with the work; the module must be importable on every node). Predict reads the plugins from
the run's saved configs, so a model trained with a plugin predicts with it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable

from hpa_ray.core.errors import HpaRayError


class PluginError(HpaRayError, ValueError):
    """A plugin module that cannot be imported (a ValueError: config validation reports it)."""


def import_plugins(modules: Iterable[str]) -> None:
    """Import each module (once per process); PluginError naming the module otherwise."""
    for name in modules:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise PluginError(f"plugin module {name!r} cannot be imported: {exc}") from exc
