"""The segment stage's configuration (conf/segment.yaml), with its backends' sections."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from hpa_ray.core.config import Section
from hpa_ray.segment.sections import ClassicalConfig, HpaConfig


class SegmentConfig(Section):
    plugins: list[str] = []  # modules imported first, in every process: they may register backends
    backend: str = "classical"  # a registered segmentation backend: classical, hpa, or a plugin's
    crop_size: int = Field(260, ge=8)  # side S of the (C, S, S) uint8 crop per cell
    batch_size: int = Field(4, ge=1)  # images per call of a segmentation actor
    images_per_block: int | Literal["auto"] = "auto"  # images per task and Parquet file; auto: 1-16
    infer_on: Literal["auto", "actors", "tasks"] = "auto"  # auto: actors for hpa, tasks for classical
    actors: int | Literal["auto"] = "auto"  # actor pool size; auto: GPUs if hpa, else CPUs
    actor_num_cpus: float = Field(0.5, gt=0)  # CPUs reserved per actor (not all: tasks need some)
    actor_num_gpus: float = Field(1.0, ge=0)  # GPUs per actor when the backend uses GPUs
    task_num_cpus: float = Field(1.0, gt=0)  # CPUs per decode / cut task
    # Bits the data in 16-bit image files use (8-16), for scaling them to 8 bits; auto: each image's
    # own (images.bit_depth). Set it (12 for a 12-bit camera) to scale every image of a set alike.
    input_bits: int | Literal["auto"] = "auto"
    classical: ClassicalConfig = ClassicalConfig()
    hpa: HpaConfig = HpaConfig()
    # Plugin backends' sections by backend name: given as `NAME: {...}` (or `segment.NAME` in predict)
    # like the built-in ones, kept and written back under `sections:`.
    sections: dict[str, dict] = {}

    @field_validator("input_bits")
    @classmethod
    def _input_bits(cls, value):
        if value != "auto" and not 8 <= value <= 16:
            raise ValueError(f"input_bits must be auto or 8 to 16, not {value}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _plugin_sections(cls, data):
        """Import the plugins, then move `NAME: {...}` of a registered plugin backend into sections."""
        if not isinstance(data, dict):
            return data
        from hpa_ray.core.plugins import import_plugins
        from hpa_ray.segment.backends import backend_names  # the built-in backends register there

        plugins = data.get("plugins") or []
        import_plugins(plugins if isinstance(plugins, list) else [])
        moved = {k: v for k, v in data.items() if k not in cls.model_fields and k in backend_names()}
        if not moved:
            return data
        rest = {k: v for k, v in data.items() if k not in moved}
        return {**rest, "sections": {**(data.get("sections") or {}), **moved}}

    @model_validator(mode="after")
    def _registered_backend(self):
        from hpa_ray.segment.backends import backend_spec

        backend_spec(self.backend)  # ValueError naming the registered ones
        for name, values in self.sections.items():
            backend_spec(name).config.model_validate(values)
        return self

    def section(self) -> BaseModel:
        """The chosen backend's validated config section."""
        if self.backend in type(self).model_fields:
            return getattr(self, self.backend)
        from hpa_ray.segment.backends import backend_spec

        return backend_spec(self.backend).config.model_validate(self.sections.get(self.backend, {}))
