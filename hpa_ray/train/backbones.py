"""Backbones: name → builder and input normalisation, in one registry (`@register_backbone`).

A backbone maps (B, 4, S, S) normalised crops to (B, F) features and carries `num_features`
(F); `hpa_ray.train.model` puts the method's heads on it. Train and predict look a backbone up here,
so adding one is one decorated function in this file (or in any module imported before use).
Its spec states what prediction needs to feed it: the per-channel mean and std (CHANNELS order:
red, green, blue, yellow) and the crop side it was designed for.

- `efficientnet-b2` (default): efficientnet-pytorch's B2, 4 input channels, for GPUs.
  `pretrained: imagenet` downloads ImageNet weights; `pretrained: PATH` loads
  efficientnet-pytorch's 3-channel file from disk (the stem's RGB filters go to red, green,
  blue, and red's again to yellow: ER overlaps microtubules).
- `timm-efficientnet_b2`: timm's B2 (1.3x faster on an H200); timm is optional.
- `small`: a CNN sized for the 2-core demo (stride-2 stem, four stages, ~50 M MACs at 128²).
- `tiny`: a few convolutions, for tests.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

from hpa_ray.core import storage
from hpa_ray.core.errors import HpaRayError
from hpa_ray.core.schema import CHANNELS

# ImageNet's RGB statistics in CHANNELS order, yellow taking red's.
IMAGENET_MEAN = (0.485, 0.456, 0.406, 0.485)
IMAGENET_STD = (0.229, 0.224, 0.225, 0.229)
IMAGENET_B2_URL = "https://github.com/lukemelas/EfficientNet-PyTorch/releases/download/1.0/efficientnet-b2-8bb594d6.pth"


class ModelError(HpaRayError, RuntimeError):
    """A model that cannot be built as configured (weights missing, package missing)."""


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    build: Callable  # pretrained (None | "imagenet" | path) → module (B, 4, S, S) → (B, F), with .num_features
    mean: tuple[float, ...]  # per channel, CHANNELS order, on [0, 1] pixels
    std: tuple[float, ...]
    crop_size: int  # the crop side it was designed for
    dropout: float  # before the heads
    pretrained: tuple[str, ...]  # what `pretrained` may be: "imagenet", "file"; () for none


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(name: str, *, crop_size: int, mean: tuple[float, ...] = IMAGENET_MEAN,
                      std: tuple[float, ...] = IMAGENET_STD, dropout: float = 0.0,
                      pretrained: tuple[str, ...] = ()):  # fmt: skip
    """Decorator: `@register_backbone("name", crop_size=128)` over `def build(pretrained) -> module`."""

    def add(build: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is registered twice")
        _REGISTRY[name] = BackboneSpec(name, build, tuple(mean), tuple(std), crop_size, dropout, pretrained)
        return build

    return add


def backbone_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_backbone(name: str) -> BackboneSpec:
    if name not in _REGISTRY:
        raise ModelError(f"unknown model {name!r}; registered: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def normalisation(name: str, device="cpu"):
    """The backbone's per-channel mean and std as (1, C, 1, 1) tensors on `device` (`normalise`)."""
    import torch

    spec = get_backbone(name)
    return tuple(torch.tensor(v, device=device).view(1, -1, 1, 1) for v in (spec.mean, spec.std))


def check_pretrained(name: str, pretrained: str | None) -> None:
    """Fail early, on the driver, for weights a worker could not load."""
    spec = get_backbone(name)
    if not pretrained:
        return
    kind = "imagenet" if pretrained == "imagenet" else "file"
    if kind not in spec.pretrained:
        raise ModelError(f"model {name} takes no pretrained {kind} weights (it takes: {spec.pretrained or 'none'})")
    if kind == "file" and not storage.is_file(pretrained):
        raise ModelError(f"pretrained weights {pretrained} do not exist")


def _with_features(module, num_features: int):
    module.num_features = num_features
    return module


def _conv_block(nn, i: int, o: int, stride: int = 1):
    return nn.Sequential(nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))


@register_backbone("efficientnet-b2", crop_size=260, dropout=0.3, pretrained=("imagenet", "file"))
def _efficientnet_b2(pretrained: str | None):
    import torch
    from efficientnet_pytorch import EfficientNet
    from torch import nn

    net = EfficientNet.from_name("efficientnet-b2", in_channels=len(CHANNELS), include_top=False)
    if pretrained:
        state = _imagenet_state(pretrained)
        stem = state.pop("_conv_stem.weight")
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        missing, unexpected = net.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {"_conv_stem.weight"}:
            raise ModelError(f"{pretrained}: not an EfficientNet-B2 state dict (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")  # fmt: skip
        with torch.no_grad():
            net._conv_stem.weight.copy_(_stem_rgb_to_4(stem))
    net.set_swish(memory_efficient=False)  # plain SiLU: 1.5x faster on CPU, torch.compile-friendly
    return _with_features(nn.Sequential(net, nn.Flatten()), net._bn1.num_features)


def _stem_rgb_to_4(stem_weight):
    """(O, 3, k, k) RGB filters → (O, 4, k, k) in CHANNELS order (red, green, blue, yellow)."""
    import torch

    rgb = {"red": 0, "green": 1, "blue": 2, "yellow": 0}
    return torch.stack([stem_weight[:, rgb[c]] for c in CHANNELS], dim=1)


def _imagenet_state(pretrained: str) -> dict:
    import torch

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


@register_backbone("timm-efficientnet_b2", crop_size=260, dropout=0.3, pretrained=("imagenet",))
def _timm_b2(pretrained: str | None):
    try:
        import timm
    except ImportError:
        raise ModelError("model timm-efficientnet_b2 needs timm (and a torchvision matching torch)") from None
    net = timm.create_model("efficientnet_b2", pretrained=pretrained == "imagenet", in_chans=len(CHANNELS),
                            num_classes=0)  # fmt: skip
    return _with_features(net, net.num_features)


def plain_cnn(widths: tuple[int, ...], repeat: bool = True):
    """Conv-BN-ReLU stages, each halving the side: a stride-2 stem to widths[0], then one stage
    per further width (a stride-2 block, and with `repeat` a second block), global average pool."""
    from torch import nn

    layers = [_conv_block(nn, len(CHANNELS), widths[0], stride=2)] + (
        [_conv_block(nn, *widths[:1] * 2)] if repeat else []
    )
    for i, o in zip(widths, widths[1:]):
        layers += [_conv_block(nn, i, o, stride=2)] + ([_conv_block(nn, o, o)] if repeat else [])
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return _with_features(nn.Sequential(*layers), widths[-1])


@register_backbone("small", crop_size=128)
def _small(pretrained: str | None):
    """Stages of 16, 32, 64, 128 channels at 1/2 … 1/16 of the crop: 54 M multiply-adds per
    128² crop, 2.1 ms per crop for a training step on 2 CPU cores (channels-last)."""
    return plain_cnn((16, 32, 64, 128))


@register_backbone("tiny", crop_size=64)
def _tiny(pretrained: str | None):
    from torch import nn

    net = nn.Sequential(
        _conv_block(nn, len(CHANNELS), 16), nn.MaxPool2d(2), _conv_block(nn, 16, 32), nn.MaxPool2d(2),
        _conv_block(nn, 32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )  # fmt: skip
    return _with_features(net, 64)
