"""HPA's published DPN-U-Net nuclei and cell models, batched, with our own post-processing.

The model files (Zenodo record 4665863: dpn_unet_nuclei_v1.pth, dpn_unet_cell_3ch_v1.pth)
are pickled whole torch modules whose classes come from the `pytorch_zoo` package. Loading a
pickle runs code from the file: only files the user named are loaded, and a SHA-256 is
checked when the config gives one. Each model maps a (B, 3, h, w) normalised image to
(B, 3, h, w) logits: background, touching border, interior.
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage import measure, segmentation

from hpa_ray.core import storage
from hpa_ray.core.schema import CHANNELS
from hpa_ray.segment.backends.common import BackendError, drop_small
from hpa_ray.segment.sections import HpaConfig

log = logging.getLogger(__name__)
ZENODO_URL = "https://zenodo.org/record/4665863"
PYTORCH_ZOO_INSTALL = "pip install https://github.com/haoxusci/pytorch_zoo/archive/master.zip"
# hpacellseg's input normalisation, on [0, 1] images.
_MEAN = np.array([124 / 255, 117 / 255, 104 / 255], np.float32)
_STD = np.array([1 / (0.0167 * 255)] * 3, np.float32)
_R, _G, _B, _Y = (CHANNELS.index(c) for c in ("red", "green", "blue", "yellow"))
_PAD = 32  # the U-Net's total stride: inputs are padded to a multiple of it


def sha256_of(path: str | Path) -> str:
    """SHA-256 of a local or object-storage file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with storage.open_input(path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_pickled_module(path: str | None, sha256: str | None, what: str):
    """Load a pickled torch.nn.Module the user named; BackendError says what is missing."""
    import torch

    if not path:
        raise BackendError(f"backend 'hpa' needs hpa.{what}: the path of the model file from {ZENODO_URL}")
    if not storage.is_file(path):
        raise BackendError(f"hpa.{what}: file {path} does not exist (download it from {ZENODO_URL})")
    if sha256 and (actual := sha256_of(path)) != sha256.lower():
        raise BackendError(f"hpa.{what}: {path} has SHA-256 {actual}, expected {sha256}")
    log.warning("loading %s: unpickling runs code from this file; load only files you trust", path)
    try:
        module = torch.load(io.BytesIO(storage.read_bytes(path)), map_location="cpu", weights_only=False)
    except ModuleNotFoundError as exc:
        raise BackendError(
            f"hpa.{what}: {path} needs the Python package {exc.name!r} to unpickle; "
            f"HPA's models need pytorch_zoo: {PYTORCH_ZOO_INSTALL}"
        ) from None
    except Exception as exc:  # a text file, a truncated download, another format: torch's errors vary
        raise BackendError(f"hpa.{what}: {path} is not a pickled torch model ({type(exc).__name__}: {exc})") from None
    if isinstance(module, torch.nn.DataParallel):
        module = module.module
    if not isinstance(module, torch.nn.Module):
        raise BackendError(f"hpa.{what}: {path} holds a {type(module).__name__}, not a torch module")
    return module.eval()


class HpaBackend:
    """`infer` runs both models on a batch of prepared images (GPU when there is one)."""

    def __init__(self, cfg: HpaConfig):
        import torch

        self.cfg = cfg
        want_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
        self.device = torch.device("cuda" if want_cuda else "cpu")
        self.uses_gpu = want_cuda
        self.nuclei_model = load_pickled_module(cfg.nuclei_model, cfg.nuclei_sha256, "nuclei_model").to(self.device)
        self.cell_model = load_pickled_module(cfg.cell_model, cfg.cell_sha256, "cell_model").to(self.device)
        self.mean = torch.tensor(_MEAN, device=self.device)[None, :, None, None]
        self.std = torch.tensor(_STD, device=self.device)[None, :, None, None]

    def _forward(self, model, x):
        """x: (B, 3, h, w) float in [0, 1] on the device → (B, 3, h, w) uint8 probabilities ×255."""
        import torch
        import torch.nn.functional as F

        h, w = x.shape[2:]
        x = F.pad((x - self.mean) / self.std, (0, -w % _PAD, 0, -h % _PAD), mode="reflect")
        probs = torch.softmax(model(x).float(), dim=1)[:, :, :h, :w]
        return (probs * 255).round().to(torch.uint8)

    def infer(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """inputs: (4, h, w) uint8 each, from `prepare` → (6, h, w) uint8 each: nuclei then
        cell probabilities ×255 (background, border, interior).

        Inputs of the same size go through the models together, one forward pass per size;
        normalising happens on the device, so the CPU only stacks uint8 arrays.
        """
        import torch

        out: list[np.ndarray | None] = [None] * len(inputs)
        for shape in {s.shape for s in inputs}:
            idx = [i for i, s in enumerate(inputs) if s.shape == shape]
            batch = torch.from_numpy(np.stack([inputs[i] for i in idx])).to(self.device).float() / 255
            with torch.inference_mode():
                nuclei = self._forward(self.nuclei_model, batch[:, [_B, _B, _B]])
                cells = self._forward(self.cell_model, batch[:, [_R, _Y, _B]])
                probs = torch.cat([nuclei, cells], 1).cpu().numpy()
            for j, i in enumerate(idx):
                out[i] = probs[j]
        return out


def raw_to_labels(raw: np.ndarray, cfg: HpaConfig) -> np.ndarray:
    """raw: (6, h, w) uint8 from `HpaBackend.infer` → (h, w) int32 cell labels at model scale."""
    p = raw.astype(np.float32) / 255
    return probabilities_to_labels(p[:3], p[3:], cfg)


def probabilities_to_labels(nuclei: np.ndarray, cells: np.ndarray, cfg: HpaConfig) -> np.ndarray:
    """Two (3, h, w) float maps (background, border, interior) → (h, w) int32 cell labels.

    Nucleus seeds are the interiors away from borders; each cell grows from its nucleus over
    the cell interior probability, inside the cell foreground (1 - background).
    """
    area = cfg.scale**2
    seeds = measure.label((nuclei[2] > cfg.nucleus_threshold) & (nuclei[1] < nuclei[2]))
    nuclei_fg = nuclei[0] < 0.5
    nucleus_labels = segmentation.watershed(-nuclei[2], seeds, mask=nuclei_fg | (seeds > 0))
    nucleus_labels = drop_small(nucleus_labels, cfg.min_nucleus_area * area)
    if nucleus_labels.max() == 0:
        return nucleus_labels.astype(np.int32)
    cell_fg = ndi.binary_fill_holes((1 - cells[0]) > cfg.cell_threshold) | (nucleus_labels > 0)
    landscape = cells[1] - cells[2]  # borders high, interiors low
    cell_labels = segmentation.watershed(landscape, nucleus_labels, mask=cell_fg)
    return drop_small(cell_labels, cfg.min_cell_area * area).astype(np.int32)
