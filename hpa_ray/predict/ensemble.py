"""A run's fold models as one classifier: mean sigmoid over the folds and the flips (TTA).

Cell models score crops of any images together (`cells`); bag models score one image's cells
as one bag (`bag`), giving each cell's and the image's probabilities. Each fold is rebuilt from
its own config (the backbone's normalisation comes from the registry), so predict never guesses
how a model was made.
"""

from __future__ import annotations

import functools
import io
import json

import numpy as np

from hpa_ray.core import storage
from hpa_ray.core.schema import NUM_CLASSES
from hpa_ray.train.config import TrainConfig
from hpa_ray.train.model import ModelError


@functools.lru_cache(maxsize=8)
def load_model(path: str, train_json: str, device: str):
    """The fold model at `path` (a state dict), rebuilt from its TrainConfig (JSON), in eval mode."""
    import torch

    from hpa_ray.train.model import build_model

    cfg = TrainConfig.model_validate_json(train_json)
    model = build_model(cfg)
    try:
        weights = io.BytesIO(storage.read_bytes(path))
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except Exception as exc:  # noqa: BLE001 - wrong file, wrong architecture
        raise ModelError(f"{path}: not weights of a {cfg.model} ({cfg.method} method): {exc}") from None
    return model.to(device).eval()


class Ensemble:
    def __init__(self, run_json: str, tta: bool, device: str = "cpu"):
        import torch

        from hpa_ray.train.backbones import normalisation

        run = json.loads(run_json)
        self.train = TrainConfig.model_validate(run["train"])
        self.is_bag = self.train.method == "bag"
        self.models = [load_model(p, self.train.model_dump_json(), device) for p in run["paths"]]
        self.device = torch.device(device)
        self.mean, self.std = normalisation(self.train.model, self.device)
        self.flips = [(), (-1,), (-2,)] if tta else [()]  # none, horizontal, vertical

    def _inputs(self, crops: np.ndarray):
        import torch

        from hpa_ray.train.augment import resize_crops
        from hpa_ray.train.data import normalise

        size = self.train.image_size
        if size and crops.shape[-1] != size:
            crops = resize_crops(crops, size)
        # (crops read from Arrow buffers are read-only: torch wants its own copy)
        return normalise(
            torch.from_numpy(np.require(crops, requirements=["C", "W"])).to(self.device), self.mean, self.std
        )

    def cells(self, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Cell models: (N, 4, S, S) uint8 crops → (N, 19) float32 probabilities."""
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(crops), batch_size):
                x = self._inputs(crops[start : start + batch_size])
                probs = [torch.sigmoid(m(x.flip(f) if f else x)) for m in self.models for f in self.flips]
                out.append(torch.stack(probs).mean(0).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, NUM_CLASSES), np.float32)

    __call__ = cells

    def bag(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bag models: one image's (n, 4, S, S) uint8 crops → cell probabilities (n, 19) and the
        image's probabilities (19,), each the mean over folds and flips."""
        import torch

        cells, images = [], []
        with torch.inference_mode():
            x = self._inputs(crops)[None]
            mask = torch.ones(1, len(crops), dtype=torch.bool, device=self.device)
            for model in self.models:
                for f in self.flips:
                    cell_logits, image_logits = model(x.flip(f) if f else x, mask)
                    cells.append(torch.sigmoid(cell_logits[0].float()))
                    images.append(torch.sigmoid(image_logits[0].float()))
        return torch.stack(cells).mean(0).cpu().numpy(), torch.stack(images).mean(0).cpu().numpy()

    def score_images(self, crops: list[np.ndarray], batch_size: int = 64) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Per image its (n, 4, S, S) crops → per image (cell (n, 19), image (n, 19) or None)."""
        if self.is_bag:
            out = []
            for c in crops:
                cell, image = self.bag(c)
                out.append((cell, np.tile(image, (len(c), 1))))
            return out
        probs = self.cells(np.concatenate(crops), batch_size) if crops else np.zeros((0, NUM_CLASSES))
        bounds = np.cumsum([0] + [len(c) for c in crops])
        return [(probs[a:b], None) for a, b in zip(bounds[:-1], bounds[1:])]
