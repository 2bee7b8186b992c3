"""Classical CPU segmentation: nuclei from the blue channel, cells by seeded watershed.

No weights. Runs at the working resolution (`_common.working_scale`: `scale` of the full
resolution, finer for an image whose nuclei are small); the labels are upsampled by the caller.
Parameters were fixed once on HPA's four reference images (../shared/data/hpa-real), for
nuclei of their typical radius; for an image whose nuclei are much smaller or larger (another
magnification, another cell type) they scale with its nuclei (`size_factor`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy import sparse
from scipy.sparse import csgraph
from skimage import filters, measure, morphology, segmentation

from hpa_ray.core.schema import CHANNELS
from hpa_ray.segment.backends.common import drop_small
from hpa_ray.segment.backends.nuclei import blur, nucleus_radius, per_label, weighted_median
from hpa_ray.segment.sections import ClassicalConfig

_R, _G, _B, _Y = (CHANNELS.index(c) for c in ("red", "green", "blue", "yellow"))


class ClassicalBackend:
    """No model: `infer` passes the prepared (downscaled) image on; all the work is
    post-processing (`segment_cells`, CPU tasks)."""

    uses_gpu = False

    def __init__(self, params: ClassicalConfig):
        self.params = params

    def infer(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """inputs: (4, h, w) uint8 each, from `build_preprocess` → the same."""
        return list(inputs)


def size_factor(blue: np.ndarray, p: ClassicalConfig) -> float:
    """blue: (h, w) float32 in [0, 1] at the working scale → k, the factor the config's pixel
    sizes are scaled by for this image (lengths ×k, areas ×k²). Sizes are read in working pixels
    as if the image were at `p.scale`: an image the working scale already brought its nuclei to
    the reference size for gets k ≈ 1. k is 1 when not adapting, when no nucleus is seen or while
    the typical radius is within ×/÷ the tolerance of the reference; beyond, radius / reference,
    held to 1/3..3 (see ClassicalConfig)."""
    if not p.adapt_to_nucleus_size or blue.max() < p.min_signal:
        return 1.0
    radius, n = nucleus_radius(blue, p.scale)
    if n == 0:
        return 1.0
    ratio = radius / p.reference_nucleus_radius
    if 1 / p.nucleus_radius_tolerance <= ratio <= p.nucleus_radius_tolerance:
        return 1.0
    return float(np.clip(ratio, 1 / 3, 3))


def size_adapted(p: ClassicalConfig, k: float) -> ClassicalConfig:
    """`p` with its pixel sizes scaled by k (lengths ×k, areas ×k²)."""
    if k == 1.0:
        return p
    lengths = ("nucleus_sigma", "body_sigma", "nucleus_split_h")
    return p.model_copy(update={**{name: getattr(p, name) * k for name in lengths},
                                "min_nucleus_area": round(p.min_nucleus_area * k * k),
                                "min_cell_area": round(p.min_cell_area * k * k)})  # fmt: skip


def segment_nuclei(blue: np.ndarray, p: ClassicalConfig) -> np.ndarray:
    """blue: (h, w) float32 in [0, 1] at the working scale → (h, w) int32 nucleus labels."""
    area_scale = p.scale**2
    smooth = blur(blue, p.nucleus_sigma * p.scale)
    if smooth.max() < p.min_signal:
        return np.zeros(blue.shape, np.int32)
    threshold = max(filters.threshold_otsu(smooth) * p.nucleus_threshold, p.min_signal)
    mask = ndi.binary_fill_holes(_lit_objects(smooth, threshold, p) if p.follow_illumination else smooth > threshold)
    # Split touching nuclei at saddles of the distance map deeper than split_h.
    dist = blur(ndi.distance_transform_edt(mask).astype(np.float32), 1.0)
    peaks = measure.label(h_maxima_by_object(dist, p.nucleus_split_h * p.scale))
    nuclei = segmentation.watershed(-dist, peaks, mask=mask)
    if p.merge_lobes:
        nuclei = merge_lobes(nuclei, smooth, p)
    return drop_small(nuclei, p.min_nucleus_area * area_scale).astype(np.int32)


def h_maxima_by_object(image: np.ndarray, h: float, margin: int = 3) -> np.ndarray:
    """image: (h, w) float ≥ 0, zero between objects (a distance map) → (h, w) uint8, the same
    as `skimage.morphology.h_maxima(image, h)`, computed object by object.

    The h-maxima come from a reconstruction under the image: it cannot carry a value across the
    zeros between objects, so each object's bounding box (plus a margin of zeros) gives its
    maxima. skimage sorts every pixel of the image, background included: ~9× slower at 512².
    """
    out = np.zeros(image.shape, np.uint8)
    objects, _ = ndi.label(image > 0)
    for label, box in enumerate(ndi.find_objects(objects), start=1):
        box = tuple(slice(max(s.start - margin, 0), s.stop + margin) for s in box)
        inside = objects[box] == label
        out[box] |= morphology.h_maxima(np.where(inside, image[box], 0), h) & inside
    return out


def _dimmed(threshold: float, levels: np.ndarray, typical: float, floor: float) -> np.ndarray:
    """(n,) object levels → (n + 1,) thresholds indexed by label (0: background, never
    above): `threshold` × each object's level / the typical level, held to floor..1."""
    return np.concatenate([[np.inf], threshold * np.clip(levels / max(typical, 1e-6), floor, 1.0)])


def _lit_objects(smooth: np.ndarray, threshold: float, p: ClassicalConfig) -> np.ndarray:
    """smooth: (h, w) float32 blue; threshold: the image's nucleus level → (h, w) bool.

    A global level loses the nuclei of a dimly lit part of the field (uneven illumination:
    vignetting, a tilted slide). Every object above `illumination_floor` × the threshold
    gets the threshold scaled by its peak / the typical peak (the area-weighted median of the
    objects reaching it); bright objects keep the global level.
    """
    objects, n = ndi.label(smooth > max(threshold * p.illumination_floor, p.min_signal))
    if n == 0:
        return smooth > threshold
    peaks = per_label(ndi.maximum, smooth, objects)
    reaching = peaks > threshold
    if not reaching.any():
        return smooth > threshold
    typical = weighted_median(peaks[reaching], np.bincount(objects.ravel(), minlength=n + 1)[1:][reaching])
    return smooth > _dimmed(threshold, peaks, typical, p.illumination_floor)[objects]


def _touching_pairs(labels: np.ndarray, signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """labels: (h, w) int, signal: (h, w) float → ((n, 2) label pairs a < b that touch
    (4-neighbours), (n,) mean of `signal` over the pixel pairs along each shared border)."""
    codes, values = [], []
    for a, b, sa, sb in ((labels[:, :-1], labels[:, 1:], signal[:, :-1], signal[:, 1:]),
                         (labels[:-1], labels[1:], signal[:-1], signal[1:])):  # fmt: skip
        border = (a != b) & (a > 0) & (b > 0)
        low, high = np.minimum(a[border], b[border]), np.maximum(a[border], b[border])
        codes.append(low.astype(np.int64) * (labels.max() + 1) + high)
        values.append((sa[border] + sb[border]) / 2)
    codes, values = np.concatenate(codes), np.concatenate(values)
    unique, inverse = np.unique(codes, return_inverse=True)
    means = np.bincount(inverse, weights=values) / np.bincount(inverse)
    return np.stack(np.divmod(unique, labels.max() + 1), axis=1), means


def merge_lobes(nuclei: np.ndarray, smooth_blue: np.ndarray, p: ClassicalConfig) -> np.ndarray:
    """nuclei: (h, w) int labels after the distance-map split; smooth_blue: (h, w) float32 →
    labels with the lobes of one nucleus joined again.

    The split height alone cannot tell a lobed nucleus from two touching ones. Two touching
    pieces are kept apart when the DNA stain says they are two nuclei: it dips along their
    border (below `merge_valley` × the dimmer piece's median) or one piece is much brighter
    (dimmer median < `merge_contrast` × the brighter's, as condensed chromatin beside an
    interphase nucleus). Otherwise they are one nucleus.
    """
    if nuclei.max() < 2:
        return nuclei
    pairs, border = _touching_pairs(nuclei, smooth_blue)
    if len(pairs) == 0:
        return nuclei
    medians = np.concatenate([[0.0], per_label(ndi.median, smooth_blue, nuclei)])
    low = np.minimum(medians[pairs[:, 0]], medians[pairs[:, 1]])
    high = np.maximum(medians[pairs[:, 0]], medians[pairs[:, 1]])
    join = (border >= p.merge_valley * low) & (low >= p.merge_contrast * high)
    # Labels joined through any chain of pairs are one nucleus; the background (node 0, no
    # edges) is the first component, so it stays 0 and the nuclei come out as 1..n.
    n = nuclei.max() + 1
    a, b = pairs[join].T
    graph = sparse.coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    return csgraph.connected_components(graph, directed=False)[1][nuclei]


def segment_cells(raw: np.ndarray, p: ClassicalConfig) -> np.ndarray:
    """raw: (4, h, w) uint8 at the working scale, channels in CHANNELS order → (h, w) int32 labels.

    The config's pixel sizes are scaled to this image's nuclei first (`size_factor`).

    Every cell grows from one nucleus over the smoothed cell-body signal (microtubules + ER +
    part of the protein + nucleus), inside a foreground set at a fraction of its Otsu level
    (with `follow_illumination`, lowered for a cell whose nucleus lies in a dim part).
    """
    raw = raw.astype(np.float32) / 255.0
    p = size_adapted(p, size_factor(raw[_B], p))
    nuclei = segment_nuclei(raw[_B], p)
    if nuclei.max() == 0:
        return nuclei
    body = raw[_R] + raw[_Y] + p.green_weight * raw[_G] + blur(raw[_B], p.nucleus_sigma * p.scale)
    body = blur(body, p.body_sigma * p.scale)
    threshold = filters.threshold_otsu(body) * p.cell_threshold
    if p.follow_illumination:
        # Each cell's foreground level scales with the body signal over its own nucleus
        # (never raised): grow all cells over the lowest level, then again inside each one's own.
        levels = per_label(ndi.median, body, nuclei)  # NaN: a nucleus dropped as too small
        per_cell = _dimmed(threshold, levels, float(np.nanmedian(levels)), p.illumination_floor)
        cells = segmentation.watershed(-body, nuclei, mask=(body > np.nanmin(per_cell[1:])) | (nuclei > 0))
        foreground = body > per_cell[cells]
    else:
        foreground = body > threshold
    foreground = ndi.binary_fill_holes(foreground | (nuclei > 0))
    cells = segmentation.watershed(-body, nuclei, mask=foreground)
    return drop_small(cells, p.min_cell_area * p.scale**2).astype(np.int32)
