"""Classifier factory: `build_model(cfg)` → a torch module mapping (B, 4, S, S) to 19 logits.

- `efficientnet-b2` (default): efficientnet-pytorch's EfficientNet-B2, 4 input channels.
  ImageNet weights: `pretrained: imagenet` downloads them (needs the internet);
  `pretrained: PATH` loads efficientnet-pytorch's 3-channel state dict from a file (local or a URI)
  (e.g. efficientnet-b2-8bb594d6.pth). The stem gets the RGB filters for red, green and blue
  and the red filter again for yellow (ER stains overlap microtubules); the head is new.
  `pretrained: null` is random initialisation (tests, offline).
- `timm-efficientnet_b2`: timm's version (1.3x faster on an H200, DESIGN.md); timm is optional
  and imported only when chosen (it needs a torchvision that matches torch).
- `tiny`: a few convolutions, for tests and benchmarks of everything around the model.
"""

from __future__ import annotations

import io

import torch
from torch import nn

from hpa_ray import storage
from hpa_ray.config import TrainConfig
from hpa_ray.schema import CHANNELS, NUM_CLASSES

IMAGENET_B2_URL = "https://github.com/lukemelas/EfficientNet-PyTorch/releases/download/1.0/efficientnet-b2-8bb594d6.pth"


class ModelError(RuntimeError):
    """A model that cannot be built as configured (weights missing, package missing)."""


def _tiny() -> nn.Module:
    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

    return nn.Sequential(
        block(len(CHANNELS), 16), nn.MaxPool2d(2), block(16, 32), nn.MaxPool2d(2), block(32, 64),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, NUM_CLASSES),
    )  # fmt: skip


def _stem_rgb_to_4(stem_weight: torch.Tensor) -> torch.Tensor:
    """(O, 3, k, k) RGB filters → (O, 4, k, k) in CHANNELS order (red, green, blue, yellow)."""
    rgb = {"red": 0, "green": 1, "blue": 2, "yellow": 0}
    return torch.stack([stem_weight[:, rgb[c]] for c in CHANNELS], dim=1)


def _efficientnet_b2(pretrained: str | None) -> nn.Module:
    from efficientnet_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-b2", in_channels=len(CHANNELS), num_classes=NUM_CLASSES)
    if pretrained:
        state = _imagenet_state(pretrained)
        stem = state.pop("_conv_stem.weight")
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {"_conv_stem.weight", "_fc.weight", "_fc.bias"}:
            raise ModelError(f"{pretrained}: not an EfficientNet-B2 state dict (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")  # fmt: skip
        with torch.no_grad():
            model._conv_stem.weight.copy_(_stem_rgb_to_4(stem))
    model.set_swish(memory_efficient=False)  # plain SiLU: 1.5x faster on CPU, torch.compile-friendly
    return model


def _imagenet_state(pretrained: str) -> dict:
    if pretrained == "imagenet":
        try:
            return torch.hub.load_state_dict_from_url(IMAGENET_B2_URL, map_location="cpu", progress=False)
        except Exception as exc:  # noqa: BLE001 - offline, proxy, anything
            raise ModelError(
                f"cannot download the ImageNet weights ({exc}); download {IMAGENET_B2_URL} "
                "elsewhere and set train.pretrained to its path, or pretrained: null"
            ) from None
    if not storage.is_file(pretrained):
        raise ModelError(f"pretrained weights {pretrained} do not exist")
    return torch.load(io.BytesIO(storage.read_bytes(pretrained)), map_location="cpu", weights_only=True)


def _timm_b2(pretrained: str | None) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise ModelError("model timm-efficientnet_b2 needs timm (and a torchvision matching torch)") from None
    model = timm.create_model("efficientnet_b2", pretrained=pretrained == "imagenet", in_chans=len(CHANNELS),
                              num_classes=NUM_CLASSES)  # fmt: skip
    if pretrained and pretrained != "imagenet":
        raise ModelError("timm-efficientnet_b2 takes pretrained: imagenet or null")
    return model


_BUILDERS = {"efficientnet-b2": _efficientnet_b2, "timm-efficientnet_b2": _timm_b2, "tiny": lambda _: _tiny()}


def check_model_config(cfg: TrainConfig) -> None:
    """Fail early, on the driver, for what would otherwise fail inside every worker."""
    if cfg.model == "tiny" and cfg.pretrained:
        raise ModelError("model tiny has no pretrained weights")
    if cfg.pretrained not in (None, "imagenet") and not storage.is_file(cfg.pretrained):
        raise ModelError(f"pretrained weights {cfg.pretrained} do not exist")


def build_model(cfg: TrainConfig) -> nn.Module:
    """The classifier named by cfg.model, with cfg.pretrained weights where it takes them."""
    check_model_config(cfg)
    return _BUILDERS[cfg.model](cfg.pretrained)
