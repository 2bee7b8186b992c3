"""Stand-ins for HPA's U-Net files, of the same contract, for tests and GPU benchmarks.

(B, 3, h, w) normalised input → (B, 3, h, w) logits (background, border, interior), saved
and loaded as pickled whole modules exactly like the real files. They see brightness, not
shape: interior where the smoothed mean intensity is high, border where it changes fast.
"""

from __future__ import annotations

import torch
from torch import nn


class StandInUNet(nn.Module):
    """Fixed-weight convolutions; `width` extra channels only make it costlier (benchmarks)."""

    def __init__(self, threshold: float = -0.5, gain: float = 8.0, width: int = 0):
        super().__init__()
        self.smooth = nn.Conv2d(3, 1, 9, padding=4, bias=False)
        nn.init.constant_(self.smooth.weight, 1 / (3 * 81))
        self.edge = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
        self.edge.weight.data.copy_(lap[None, None])
        self.body = None
        if width:
            self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 1, 1))
        self.threshold, self.gain = threshold, gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.smooth(x)
        interior = self.gain * (s - self.threshold)
        if self.body is not None:
            interior = interior + 0 * self.body(x)
        border = self.gain * (self.edge(s).abs() * 4 - 1)
        return torch.cat([-interior, border, interior], dim=1)


def save_standin(path: str, **kwargs) -> str:
    """Pickle a whole StandInUNet module to `path`, as HPA's files are pickled."""
    torch.save(StandInUNet(**kwargs), path)
    return path
