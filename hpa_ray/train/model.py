"""Classifiers: a backbone from `hpa_ray.train.backbones` with the heads of the training method.

- `method: cell`: `CellClassifier`, (B, 4, S, S) crops → (B, 19) logits; each cell is trained
  on its image's (weak) labels.
- `method: bag`: `BagClassifier`, a bag of an image's cells (B, K, 4, S, S) with a (B, K) mask of
  the real (not padding) cells → per-cell logits (B, K, 19) and image logits (B, 19) pooled
  over the bag; trained on image BCE + `cell_loss_weight` × cell BCE against the image's labels.
  Pooling (`pooling`): `attention` (a learnt weight per cell over its features, Ilse et al. 2018),
  `lse` (log-sum-exp of the cell logits, sharpness `lse_r`), `max` (of the cell logits), `mean`
  (of the features).
"""

from __future__ import annotations

import torch
from torch import nn

from hpa_ray.core.plugins import import_plugins
from hpa_ray.core.schema import NUM_CLASSES
from hpa_ray.train.backbones import ModelError, check_pretrained, get_backbone
from hpa_ray.train.config import TrainConfig

__all__ = ["BagClassifier", "CellClassifier", "ModelError", "bag_loss", "build_model", "check_model_config"]


def full_precision(x: torch.Tensor):
    """Autocast off on x's device: the heads run in fp32 under bf16 autocast. bf16 logits keep
    8 bits of mantissa, so thousands of cells' scores tie and every AP computed from them drops."""
    return torch.autocast(x.device.type, enabled=False)


class CellClassifier(nn.Module):
    def __init__(self, backbone: nn.Module, dropout: float):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(backbone.num_features, NUM_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 4, S, S) normalised → (B, 19) fp32 logits."""
        features = self.backbone(x)
        with full_precision(x):
            return self.head(features.float())


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = 1) -> torch.Tensor:
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=dim)


class BagClassifier(nn.Module):
    channels_last = False  # set by training: the gathered cells go to the backbone channels-last

    def __init__(self, backbone: nn.Module, dropout: float, pooling: str, lse_r: float = 5.0):
        super().__init__()
        features = backbone.num_features
        self.backbone, self.pooling, self.lse_r = backbone, pooling, lse_r
        self.drop = nn.Dropout(dropout)
        self.cell_head = nn.Linear(features, NUM_CLASSES)
        self.image_head = nn.Linear(features, NUM_CLASSES) if pooling in ("attention", "mean") else None
        self.attention = (
            nn.Sequential(nn.Linear(features, 128), nn.Tanh(), nn.Linear(128, 1)) if pooling == "attention" else None
        )

    def cell_features(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, K, 4, S, S), mask (B, K) bool → (B, K, F); padding cells are not computed."""
        out = x.new_zeros((*mask.shape, self.backbone.num_features), dtype=torch.float32)
        if mask.any():
            cells = x[mask]
            if self.channels_last:
                cells = cells.contiguous(memory_format=torch.channels_last)
            out[mask] = self.backbone(cells).float()
        return out

    def pool(self, features: torch.Tensor, cell_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, K, F) features, (B, K, 19) cell logits, (B, K) mask → (B, 19) image logits."""
        m = mask.unsqueeze(-1)
        if self.pooling == "attention":
            weights = masked_softmax(self.attention(features).squeeze(-1), mask).unsqueeze(-1)
            return self.image_head(self.drop((weights * features).sum(1)))
        if self.pooling == "mean":
            mean = (features * m).sum(1) / m.sum(1).clamp(min=1)
            return self.image_head(self.drop(mean))
        if self.pooling == "max":
            return cell_logits.masked_fill(~m, float("-inf")).amax(1)
        # lse: a smooth max, (1/r) log mean exp(r x) over the real cells
        r = self.lse_r
        scaled = (r * cell_logits).masked_fill(~m, float("-inf"))
        return (torch.logsumexp(scaled, 1) - torch.log(m.sum(1).clamp(min=1).float())) / r

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, K, 4, S, S) normalised, mask (B, K) bool → cell logits (B, K, 19), image logits (B, 19)."""
        features = self.cell_features(x, mask)
        with full_precision(x):
            cell_logits = self.cell_head(self.drop(features))
            return cell_logits, self.pool(features, cell_logits, mask)


def bag_loss(cell_logits, image_logits, mask, labels, cell_weight: float) -> torch.Tensor:
    """Image BCE + cell_weight × mean cell BCE, every real cell against its image's labels (B, 19)."""
    bce = nn.functional.binary_cross_entropy_with_logits
    image = bce(image_logits.float(), labels)
    if cell_weight == 0:
        return image
    targets = labels.unsqueeze(1).expand_as(cell_logits)
    return image + cell_weight * bce(cell_logits[mask].float(), targets[mask])


def check_model_config(cfg: TrainConfig) -> None:
    """Fail early, on the driver, for what would otherwise fail inside every worker."""
    check_pretrained(cfg.model, cfg.pretrained)


def build_model(cfg: TrainConfig) -> nn.Module:
    """The backbone named by cfg.model with the heads of cfg.method."""
    check_model_config(cfg)
    import_plugins(cfg.plugins)
    spec = get_backbone(cfg.model)
    backbone = spec.build(cfg.pretrained)
    if cfg.method == "bag":
        return BagClassifier(backbone, spec.dropout, cfg.pooling, cfg.lse_r)
    return CellClassifier(backbone, spec.dropout)
