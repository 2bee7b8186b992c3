"""From the classifier's outputs to the confidences written per cell (predict's last step).

numpy-first and small so that each rule can be switched, tested on hand-made arrays and
measured (docs/lab/quality.md): fusion of cell and image predictions (bag models), down-weighting
cells cut by the image border or much smaller than the image's typical cell, and the Negative
class derived from the others.
"""

from __future__ import annotations

import numpy as np

from hpa_ray.core.metrics import max_by_image
from hpa_ray.core.schema import NEGATIVE
from hpa_ray.predict.config import PredictConfig


def image_from_cells(cell: np.ndarray, image_of: np.ndarray | None) -> np.ndarray:
    """(N, 19) → (N, 19), each cell's row its image's (`max_by_image`: its most confident cell)."""
    image, rows = max_by_image(cell, image_of)
    return image[rows]


def fuse(cell: np.ndarray, image: np.ndarray | None, fusion: str, image_weight: float,
         image_of: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """cell (N, 19) probabilities, image (N, 19) the probabilities of each cell's image (None:
    from the cells, `image_from_cells`) → (N, 19). product: cell × image; blend: (1 - w) cell +
    w image; cell: cell alone."""
    if fusion == "cell":
        return cell
    if image is None:
        image = image_from_cells(cell, image_of)
    if fusion == "product":
        return cell * image
    return (1 - image_weight) * cell + image_weight * image


def negative_complement(probs: np.ndarray) -> np.ndarray:
    """Negative = 1 - the most confident other class (a cell that shows nothing is negative)."""
    out = probs.copy()
    out[:, NEGATIVE] = 1 - np.delete(probs, NEGATIVE, axis=1).max(axis=1)
    return out


def cell_scores(cell: np.ndarray, image: np.ndarray | None, touches_border: np.ndarray, area: np.ndarray,
                cfg: PredictConfig, image_of: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """(N, 19) confidences to write: fused, with the Negative rule, then border and small-cell
    weights (they rank a whole cell lower, every class alike).

    touches_border (N,) bool, area (N,) pixels, image_of (N,) the image each cell is from
    (small cells are judged against their own image's median; None: all from one image).
    """
    probs = fuse(cell, image, cfg.fusion, cfg.image_weight, image_of)
    if cfg.negative == "complement":
        probs = negative_complement(probs)
    weight = np.where(np.asarray(touches_border, bool), cfg.border_weight, 1.0)
    if cfg.small_cell_weight != 1.0 and len(area):
        groups = np.zeros(len(area), int) if image_of is None else np.unique(image_of, return_inverse=True)[1]
        medians = np.array([np.median(area[groups == g]) for g in range(groups.max() + 1)])
        small = np.asarray(area) < cfg.small_cell_fraction * medians[groups]
        weight = weight * np.where(small, cfg.small_cell_weight, 1.0)
    return (probs * weight[:, None]).astype(np.float32)
