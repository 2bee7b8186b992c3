"""The synth stage's configuration (conf/synth.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from hpa_ray.core.config import Section


class SynthConfig(Section):
    size: int = Field(512, ge=128)  # image side in pixels (2048 and 3072 as in HPA work)
    bit_depth: Literal[8, 16] = 8  # PNG bit depth of the written channels
    cells_per_megapixel: float = Field(4.0, gt=0)  # density; HPA images hold ~15 per 2048²
    negative_fraction: float = Field(0.1, ge=0, le=1)  # share of images labelled Negative only
    max_labels: int = Field(3, ge=1, le=18)  # most localisation classes per image
    show_probability: float = Field(0.7, gt=0, le=1)  # chance a cell shows each image label …
    # … except these classes, shown by a minority of cells as in HPA (cell cycle, single-cell
    # variability); {} makes every class as common as the rest (the data before this existed).
    class_show_probability: dict[int, float] = {3: 0.4, 5: 0.4, 11: 0.15, 12: 0.35, 15: 0.25, 17: 0.5}
    noise: float = Field(0.03, ge=0)  # std of additive noise, in units of full brightness

    @field_validator("class_show_probability")
    @classmethod
    def _classes(cls, value: dict[int, float]) -> dict[int, float]:
        for c, p in value.items():
            if not 0 <= c < 18 or not 0 < p <= 1:
                raise ValueError(f"class {c}: {p}; classes are 0-17 (not Negative), probabilities in (0, 1]")
        return value
