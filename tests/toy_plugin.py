"""A plugin of the kind a user writes: one segmentation backend and one backbone, registered
through the public registries alone (named in `segment.plugins` / `train.plugins`)."""

from __future__ import annotations

from functools import partial

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage as ndi

from hpa_ray import BackendSpec, register_backbone, register_backend


class ToyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    scale: float = Field(0.25, gt=0, le=1)  # model resolution relative to the image
    threshold: float = Field(0.3, gt=0, lt=1)  # × the image's brightest blue: nucleus pixels
    grow: int = Field(6, ge=0)  # model-scale px a nucleus grows into its cell


def downscale(image: np.ndarray, scale: float) -> np.ndarray:
    """(4, H, W) uint8 → (4, h, w) uint8, h = round(H * scale)."""
    size = (round(image.shape[2] * scale), round(image.shape[1] * scale))
    return np.stack([cv2.resize(channel, size, interpolation=cv2.INTER_AREA) for channel in image])


class ToyBackend:
    """infer: (4, h, w) uint8 inputs → (h, w) uint8 nucleus masks."""

    def __init__(self, cfg: ToyConfig):
        self.cfg = cfg

    def infer(self, images: list[np.ndarray]) -> list[np.ndarray]:
        blue = [image[2].astype(np.float32) for image in images]
        return [(b > self.cfg.threshold * max(b.max(), 1)).astype(np.uint8) for b in blue]


def cells_from_nuclei(raw: np.ndarray, cfg: ToyConfig) -> np.ndarray:
    """(h, w) nucleus mask → (h, w) int32 cell labels: each nucleus grown by `grow` px."""
    nuclei, _ = ndi.label(raw)
    if cfg.grow == 0:
        return nuclei.astype(np.int32)
    distance, (rows, cols) = ndi.distance_transform_edt(nuclei == 0, return_indices=True)
    return np.where(distance <= cfg.grow, nuclei[rows, cols], 0).astype(np.int32)


register_backend(BackendSpec(
    "toy", ToyConfig,
    preprocess=lambda cfg: partial(downscale, scale=cfg.scale),
    backend=ToyBackend,
    postprocess=lambda cfg: partial(cells_from_nuclei, cfg=cfg),
))  # fmt: skip


@register_backbone("toy-net", crop_size=32, mean=(0.1, 0.1, 0.1, 0.1), std=(0.2, 0.2, 0.2, 0.2))
def _toy_net(pretrained: str | None):
    from torch import nn

    net = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net.num_features = 8
    return net
