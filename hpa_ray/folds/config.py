"""The folds stage's configuration (conf/folds.yaml)."""

from __future__ import annotations

from pydantic import Field

from hpa_ray.core.config import Section


class FoldsConfig(Section):
    n_folds: int = Field(5, ge=2)  # number of folds
    seed: int = 0  # permutes the images before stratifying
    order: int = Field(2, ge=1, le=3)  # label-combination order of the iterative stratification
    min_positives: int = Field(50, ge=1)  # classes with fewer positives are not repaired
    tolerance: float = Field(0.03, ge=0)  # repair stops when every such class is this close
    repair_steps: int = Field(2000, ge=0)  # most single-image moves of the repair pass
