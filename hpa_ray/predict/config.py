"""The predict stage's configuration (conf/predict.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError, field_validator

from hpa_ray.core.config import Section, describe, merge
from hpa_ray.segment.config import SegmentConfig


class PredictConfig(Section):
    min_confidence: float = Field(0.01, ge=0, le=1)  # (cell, class) pairs below this are not written
    top_k: int = Field(8, ge=1, le=19)  # most classes written per cell, most confident first
    tta: bool = True  # also score the horizontally and vertically flipped crop; mean of all
    batch_size: int = Field(64, ge=1)  # crops per forward pass
    images_per_batch: int = Field(4, ge=1)  # images per call of a GPU classifier actor (CPU: a block of images)
    use_gpu: bool | Literal["auto"] = "auto"  # classify in GPU actors; auto: when the cluster has GPUs
    actors: int | Literal["auto"] = "auto"  # GPU classifier actors; auto: one per GPU
    actor_num_gpus: float = Field(0.5, gt=0, le=1)  # GPU share per classifier actor (hpa segmentation may share it)
    actor_num_cpus: float = Field(0.5, gt=0)  # CPUs per classifier actor (it feeds the GPU; tasks cut the cells)
    # A cell's confidence with its image's (bag models: the image head; cell models: the image's
    # most confident cell): blend (1 - w) cell + w image, product cell × image, or cell alone.
    fusion: Literal["blend", "product", "cell"] = "blend"
    image_weight: float = Field(0.7, ge=0, le=1)  # fusion blend: w, the weight of the image prediction
    negative: Literal["model", "complement"] = "model"  # Negative: the model's, or 1 - the top other class
    border_weight: float = Field(1.0, ge=0, le=1)  # confidences × this for cells cut by the image border
    small_cell_weight: float = Field(1.0, ge=0, le=1)  # confidences × this for small cells …
    small_cell_fraction: float = Field(0.25, ge=0, le=1)  # … those under this × their image's median area
    # SegmentConfig keys replacing those of the run's segment_config.yaml (e.g. hpa.cell_model),
    # checked against SegmentConfig here, so that a misspelt key fails before any model loads.
    segment: dict = {}

    @field_validator("segment")
    @classmethod
    def _segment_keys(cls, updates: dict) -> dict:
        try:
            SegmentConfig.model_validate(merge(SegmentConfig().model_dump(), updates))
        except ValidationError as exc:
            raise ValueError("; ".join(describe(exc, None, SegmentConfig).splitlines())) from None
        return updates
