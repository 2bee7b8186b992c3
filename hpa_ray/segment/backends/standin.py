"""Stand-ins for HPA's U-Net files, of the same contract, for tests and GPU benchmarks.

(B, 3, h, w) normalised input → (B, 3, h, w) logits (background, border, interior), saved
and loaded as pickled whole modules exactly like the real files. They see brightness, not
shape: interior where the smoothed mean intensity is high, border where it changes fast.
`encoder="dpn92"` adds a U-Net with timm's DPN-92 encoder (random weights) whose output is
added times zero: as costly on a GPU as HPA's DPN-92 U-Nets, with the same usable masks.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class _Decoder(nn.Module):
    """U-Net decoder over a timm `features_only` encoder: upsample, concatenate the skip, conv."""

    def __init__(self, encoder: nn.Module, width: int = 256):
        super().__init__()
        channels = encoder.feature_info.channels()[::-1]  # deepest first
        outs = [max(16, width >> i) for i in range(len(channels))]
        ins = [channels[0]] + [outs[i - 1] + channels[i] for i in range(1, len(channels))]
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True))
            for i, o in zip(ins, outs)
        )
        self.head = nn.Conv2d(outs[-1], 3, 1)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        features = features[::-1]
        x = self.blocks[0](features[0])
        for block, skip in zip(self.blocks[1:], features[1:]):
            x = F.interpolate(x, size=skip.shape[2:], mode="nearest")
            x = block(torch.cat([x, skip], 1))
        return self.head(F.interpolate(x, size=size, mode="bilinear", align_corners=False))


class StandInUNet(nn.Module):
    """Fixed-weight convolutions that find bright cells. Only to make it costlier (benchmarks):
    `width` adds a conv layer of that many channels; `encoder` (a timm model name, e.g. "dpn92")
    adds a whole U-Net with that encoder."""

    def __init__(self, threshold: float = -0.5, gain: float = 8.0, width: int = 0, encoder: str | None = None):
        super().__init__()
        self.smooth = nn.Conv2d(3, 1, 9, padding=4, bias=False)
        nn.init.constant_(self.smooth.weight, 1 / (3 * 81))
        self.edge = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
        self.edge.weight.data.copy_(lap[None, None])
        self.body = None
        if width:
            self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 1, 1))
        self.encoder = self.decoder = None
        if encoder:
            import timm

            self.encoder = timm.create_model(encoder, pretrained=False, features_only=True, in_chans=3)
            self.decoder = _Decoder(self.encoder)
        self.threshold, self.gain = threshold, gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.smooth(x)
        interior = self.gain * (s - self.threshold)
        if self.body is not None:
            interior = interior + 0 * self.body(x)
        border = self.gain * (self.edge(s).abs() * 4 - 1)
        out = torch.cat([-interior, border, interior], dim=1)
        if self.encoder is not None:
            # Random weights may overflow (inf * 0 = nan): the extra output is zeroed safely.
            extra = self.decoder(self.encoder(x), x.shape[2:])
            out = out + torch.nan_to_num(0 * extra, nan=0.0, posinf=0.0, neginf=0.0)
        return out


def save_standin(path: str, **kwargs) -> str:
    """Pickle a whole StandInUNet module to `path`, as HPA's files are pickled."""
    torch.save(StandInUNet(**kwargs), path)
    return path


def timm_available() -> bool:
    """Whether timm imports here (it needs a torchvision that matches torch)."""
    try:
        import timm  # noqa: F401
    except Exception:  # noqa: BLE001 - ImportError, or torchvision's operator mismatch
        return False
    return True
