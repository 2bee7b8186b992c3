import sys
import textwrap

import cv2
import numpy as np
import pytest
import torch
from skimage.segmentation import find_boundaries

from hpa_ray.core.cells import upsample_labels
from hpa_ray.core.schema import CHANNELS
from hpa_ray.evaluate.score import match_cells
from hpa_ray.segment.backends import build_backend, build_postprocess, build_preprocess
from hpa_ray.segment.backends.classical import (
    h_maxima_by_object,
    nucleus_radius,
    segment_nuclei,
    size_adapted,
    size_factor,
)
from hpa_ray.segment.backends.common import downscale
from hpa_ray.segment.backends.hpa import BackendError, load_pickled_module, probabilities_to_labels, sha256_of
from hpa_ray.segment.backends.nuclei import fill_holes, to_working_scale, working_scale
from hpa_ray.segment.backends.standin import save_standin
from hpa_ray.segment.config import SegmentConfig
from hpa_ray.segment.sections import ClassicalConfig, HpaConfig
from hpa_ray.synth.config import SynthConfig
from hpa_ray.synth.generate import make_image
from tests.conftest import HPA_REAL, real_image_ids


def _segment(cfg: SegmentConfig, image: np.ndarray) -> np.ndarray:
    raw = build_backend(cfg).infer([build_preprocess(cfg)(image)])[0]
    return upsample_labels(build_postprocess(cfg)(raw), *image.shape[1:])


def test_classical_matches_hpa_unet_on_real_images(shared_data):
    """Quality bar: F1 >= 0.90 at IoU >= 0.6 against HPA's own masks, one fixed config."""
    cfg = SegmentConfig()
    tp = n_pred = n_true = 0
    for image_id in real_image_ids():
        image = np.stack(
            [
                cv2.imread(str(HPA_REAL / "images" / f"{image_id}_{c}.png"), 0)
                for c in ("red", "green", "blue", "yellow")
            ]
        )
        truth = cv2.imread(str(HPA_REAL / "masks" / f"{image_id}_predictedmask.png"), cv2.IMREAD_UNCHANGED)
        counts = match_cells(_segment(cfg, image), truth)
        tp, n_pred, n_true = tp + counts[0], n_pred + counts[1], n_true + counts[2]
    assert n_true == 55
    assert 2 * tp / (n_pred + n_true) >= 0.90


def test_classical_on_synthetic_cells():
    rng = np.random.default_rng(11)
    tp = n_pred = n_true = 0
    for _ in range(3):
        s = make_image(2048, SynthConfig(size=2048), rng)
        counts = match_cells(_segment(SegmentConfig(), s.image), s.cells)
        tp, n_pred, n_true = tp + counts[0], n_pred + counts[1], n_true + counts[2]
    assert 2 * tp / (n_pred + n_true) >= 0.9


def _real(image_id: str) -> tuple[np.ndarray, np.ndarray]:
    image = np.stack([cv2.imread(str(HPA_REAL / "images" / f"{image_id}_{c}.png"), 0) for c in CHANNELS])
    return image, cv2.imread(str(HPA_REAL / "masks" / f"{image_id}_predictedmask.png"), cv2.IMREAD_UNCHANGED)


def _zoom(image: np.ndarray, labels: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    size = (round(labels.shape[1] * factor),) * 2
    zoomed = np.stack([cv2.resize(c, size, interpolation=cv2.INTER_AREA) for c in image])
    return zoomed, cv2.resize(labels.astype(np.int32), size, interpolation=cv2.INTER_NEAREST_EXACT)


def test_classical_holds_at_another_magnification(shared_data):
    """The real images at 0.6× (as from a lower magnification): the nucleus-relative
    parameters keep F1 >= 0.88; the absolute ones (fitted at 1×) fall below them."""
    scores = {}
    for adapt in (True, False):
        cfg = SegmentConfig(classical=ClassicalConfig(adapt_to_nucleus_size=adapt))
        counts = np.zeros(3, int)
        for image_id in real_image_ids():
            image, truth = _zoom(*_real(image_id), 0.6)
            counts += match_cells(_segment(cfg, image), truth)
        scores[adapt] = 2 * counts[0] / (counts[1] + counts[2])
    assert scores[True] >= 0.88 and scores[True] > scores[False], scores


def _lit(image: np.ndarray, kind: str) -> np.ndarray:
    """(4, H, W) uint8 under uneven illumination: a ramp ×0.25 → ×1 left to right, or a
    vignette falling to ×0.35 at the corners."""
    h, w = image.shape[1:]
    if kind == "ramp":
        gain = np.broadcast_to(np.linspace(0.25, 1.0, w, dtype=np.float32), (h, w))
    else:
        yy, xx = np.mgrid[:h, :w].astype(np.float32)
        gain = 1 - 0.65 * ((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / ((h / 2) ** 2 + (w / 2) ** 2)
    return np.clip(image * gain[None], 0, 255).astype(np.uint8)


def _pooled_f1(cfg: SegmentConfig, items: list[tuple[np.ndarray, np.ndarray]]) -> float:
    counts = sum(np.array(match_cells(_segment(cfg, image), truth)) for image, truth in items)
    return 2 * counts[0] / (counts[1] + counts[2])


def test_dimly_lit_cells_are_found_when_thresholds_follow_the_illumination():
    """Synthetic fields (truth known) under a ramp of light: a global threshold loses the dim
    side's nuclei and shrinks its cells; following the illumination keeps them."""
    rng = np.random.default_rng(5)
    fields = [make_image(2048, SynthConfig(size=2048), rng) for _ in range(3)]
    items = [(_lit(s.image, "ramp"), s.cells) for s in fields]
    follow, fixed = (SegmentConfig(classical=ClassicalConfig(follow_illumination=on)) for on in (True, False))
    score = _pooled_f1(follow, items)
    assert score >= 0.95 and score > _pooled_f1(fixed, items)


@pytest.mark.parametrize("kind", ["ramp", "vignette"])
def test_real_images_under_uneven_light_keep_their_cells(shared_data, kind):
    """The four real images under a ramp ×0.25 → ×1 or a vignette: F1 ≥ 0.88 (the bar for
    real images the parameters were not fitted on; 0.899 and 0.954 at this writing, 0.954
    evenly lit), above the global thresholds' (0.835, 0.916)."""
    lit = [(_lit(image, kind), truth) for image, truth in (_real(image_id) for image_id in real_image_ids())]
    follow = _pooled_f1(SegmentConfig(), lit)
    fixed = _pooled_f1(SegmentConfig(classical=ClassicalConfig(follow_illumination=False)), lit)
    assert follow >= 0.88 and follow > fixed, (follow, fixed)


def _blue(image: np.ndarray, scale: float = 0.25) -> np.ndarray:
    return downscale(image[2:3], scale)[0].astype(np.float32) / 255.0


def test_nucleus_radius_follows_the_nuclei():
    s = make_image(2048, SynthConfig(size=2048), np.random.default_rng(5))
    areas = np.bincount(s.nuclei.ravel())[1:]
    truth = np.sqrt(np.median(areas[areas > 0]) / np.pi)
    radius, n = nucleus_radius(_blue(s.image), 0.25)
    assert n >= 3 and abs(radius / truth - 1) < 0.2, (radius, truth)
    zoomed, _ = _zoom(s.image, s.cells, 1.5)
    assert abs(nucleus_radius(_blue(zoomed), 0.25)[0] / radius - 1.5) < 0.15
    assert nucleus_radius(np.zeros((512, 512), np.float32), 0.25) == (0.0, 0)


def test_size_factor_scales_only_beyond_the_tolerance():
    s = make_image(2048, SynthConfig(size=2048), np.random.default_rng(6))
    p, blue = ClassicalConfig(), _blue(s.image)
    radius, _ = nucleus_radius(blue, p.scale)
    assert size_factor(blue, p.model_copy(update={"reference_nucleus_radius": radius * 1.1})) == 1.0  # within 1.2
    assert size_factor(blue, p.model_copy(update={"adapt_to_nucleus_size": False})) == 1.0
    assert size_factor(np.zeros((512, 512), np.float32), p) == 1.0
    # Nuclei half the reference: lengths x0.5, areas x0.25; a third at most.
    k = size_factor(blue, p.model_copy(update={"reference_nucleus_radius": radius * 2}))
    assert k == pytest.approx(0.5)
    assert size_factor(blue, p.model_copy(update={"reference_nucleus_radius": radius * 5})) == pytest.approx(1 / 3)
    scaled = size_adapted(p, k)
    assert scaled.nucleus_split_h == pytest.approx(p.nucleus_split_h * 0.5)
    assert scaled.min_cell_area == round(p.min_cell_area * 0.25) and scaled.scale == p.scale


def test_h_maxima_object_by_object_are_skimages():
    """The distance map of a synthetic field's nuclei (objects touching, close, cut by the
    border) and of random blobs: the same maxima as skimage's whole-image transform."""
    from scipy import ndimage as ndi
    from skimage.morphology import h_maxima

    s = make_image(2048, SynthConfig(size=2048, cells_per_megapixel=10.0), np.random.default_rng(3))
    blobs = cv2.GaussianBlur(np.random.default_rng(4).random((300, 300)).astype(np.float32), (0, 0), 6) > 0.5
    for mask in (cv2.resize((s.nuclei > 0).astype(np.uint8), (512, 512)) > 0, blobs):
        dist = cv2.GaussianBlur(ndi.distance_transform_edt(mask).astype(np.float32), (0, 0), 1.0)
        for h in (1.0, 2.5, 6.0):
            expected = h_maxima(dist, h)
            assert expected.any() and np.array_equal(h_maxima_by_object(dist, h), expected)


def _two_lobes(left: float, right: float, gap: float | None = None) -> np.ndarray:
    """(256, 256) float32 blue at model scale: two overlapping discs of radius 20 (a nucleus of
    radius 80 at 0.25), the given brightness each; `gap`: a dark band of that level between."""
    yy, xx = np.mgrid[:256, :256]
    blue = np.full((256, 256), 0.01, np.float32)
    blue[(yy - 128) ** 2 + (xx - 110) ** 2 < 400] = left
    blue[(yy - 128) ** 2 + (xx - 146) ** 2 < 400] = right
    if gap is not None:
        blue[:, 126:131] = np.minimum(blue[:, 126:131], gap)
    return blue


@pytest.mark.parametrize(
    ("left", "right", "gap", "nuclei"),
    [(0.6, 0.6, None, 1),  # one lobed nucleus: the distance map splits it, the stain joins it again
     (0.45, 0.9, None, 2),  # condensed chromatin beside an interphase nucleus
     (0.6, 0.6, 0.15, 2)],  # two touching nuclei, the stain dips between them
)  # fmt: skip
def test_touching_nuclei_split_by_shape_are_joined_unless_the_stain_parts_them(left, right, gap, nuclei):
    p = ClassicalConfig(adapt_to_nucleus_size=False)
    blue = _two_lobes(left, right, gap)
    assert segment_nuclei(blue, p.model_copy(update={"merge_lobes": False})).max() == 2  # the shape cue splits
    labels = segment_nuclei(blue, p)
    assert len(np.unique(labels[labels > 0])) == nuclei


def test_black_image_has_no_cells():
    assert _segment(SegmentConfig(), np.zeros((4, 512, 512), np.uint8)).max() == 0


def _prob_maps(labels: np.ndarray, rng) -> np.ndarray:
    """(3, h, w) background/border/interior probabilities drawn from known labels, blurred, noisy."""
    border = find_boundaries(labels, mode="thick")
    p = np.stack([(labels == 0) & ~border, border, (labels > 0) & ~border]).astype(np.float32)
    p = np.stack([cv2.GaussianBlur(c, (0, 0), 1.5) for c in p]) + rng.uniform(0, 0.2, p.shape).astype(np.float32)
    return p / p.sum(0, keepdims=True)


def test_hpa_postprocessing_recovers_cells_from_probability_maps():
    rng = np.random.default_rng(0)
    cfg = HpaConfig()
    tp = n_true = n_pred = 0
    for _ in range(4):
        s = make_image(2048, SynthConfig(size=2048), rng)
        small = lambda a: cv2.resize(a, (512, 512), interpolation=cv2.INTER_NEAREST).astype(np.int32)  # noqa: E731
        labels = probabilities_to_labels(_prob_maps(small(s.nuclei), rng), _prob_maps(small(s.cells), rng), cfg)
        counts = match_cells(upsample_labels(labels, 2048, 2048), s.cells)
        tp, n_pred, n_true = tp + counts[0], n_pred + counts[1], n_true + counts[2]
    assert n_true >= 30
    assert tp == n_true == n_pred, "every known cell is recovered at IoU >= 0.6"


@pytest.fixture()
def standins(tmp_path):
    return save_standin(str(tmp_path / "nuclei.pth")), save_standin(str(tmp_path / "cell.pth"))


def test_hpa_backend_loads_pickled_standins_and_batches(standins):
    nuclei, cell = standins
    cfg = SegmentConfig(
        backend="hpa",
        # The working scale fixed at 1/4: every 1024² image one size (synth's nuclei are near the
        # size that would make some of them finer).
        hpa=HpaConfig(
            nuclei_model=nuclei,
            cell_model=cell,
            device="cpu",
            nuclei_sha256=sha256_of(nuclei),
            min_working_nucleus_radius=0,
        ),
    )
    backend = build_backend(cfg)
    passes = []  # forward passes of the nuclei model, counted from outside
    backend.nuclei_model.register_forward_hook(lambda *_: passes.append(1))
    rng = np.random.default_rng(2)
    images = [make_image(1024, SynthConfig(size=1024), rng).image for _ in range(3)]
    images.append(make_image(768, SynthConfig(size=768), rng).image)
    raws = backend.infer([build_preprocess(cfg)(im) for im in images])
    assert len(passes) == 2, "one forward pass per image size"
    assert [r.shape for r in raws] == [(6, 256, 256)] * 3 + [(6, 192, 192)]
    assert raws[0].dtype == np.uint8
    labels = build_postprocess(cfg)(raws[0])
    assert labels.shape == (256, 256) and labels.max() >= 1


def test_hpa_backend_refuses_clearly(standins, tmp_path):
    nuclei, cell = standins
    with pytest.raises(BackendError, match="needs hpa.nuclei_model.*zenodo"):
        build_backend(SegmentConfig(backend="hpa"))
    with pytest.raises(BackendError, match="does not exist"):
        load_pickled_module(str(tmp_path / "missing.pth"), None, "cell_model")
    with pytest.raises(BackendError, match="SHA-256"):
        load_pickled_module(nuclei, "0" * 64, "nuclei_model")
    torch.save({"not": "a module"}, tmp_path / "dict.pth")
    with pytest.raises(BackendError, match="not a torch module"):
        load_pickled_module(str(tmp_path / "dict.pth"), None, "cell_model")


def test_hpa_backend_says_which_package_a_pickle_needs(tmp_path, monkeypatch):
    # A module pickled from a package that is gone at load time, as pytorch_zoo is for HPA's files.
    pkg = tmp_path / "pytorch_zoo_standin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        textwrap.dedent("""
        import torch
        class Net(torch.nn.Module):
            def forward(self, x):
                return x
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import pytorch_zoo_standin

    torch.save(pytorch_zoo_standin.Net(), tmp_path / "m.pth")
    monkeypatch.delitem(sys.modules, "pytorch_zoo_standin")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    with pytest.raises(BackendError, match="pytorch_zoo_standin.*pytorch_zoo"):
        load_pickled_module(str(tmp_path / "m.pth"), None, "nuclei_model")


def _pooled(cfg: SegmentConfig, items) -> tuple[float, float]:
    """(F1 at IoU >= 0.6 pooled over items, mean IoU of the matched cells)."""
    counts, ious = np.zeros(3, int), []
    for image, truth in items:
        pred = _segment(cfg, image)
        counts += match_cells(pred, truth)
        n_t = int(truth.max()) + 1
        table = np.bincount(pred.ravel().astype(np.int64) * n_t + truth.ravel(), minlength=(int(pred.max()) + 1) * n_t)
        table = table.reshape(-1, n_t)
        iou = table[1:, 1:] / np.maximum(table.sum(1)[1:, None] + table.sum(0)[None, 1:] - table[1:, 1:], 1)
        ious += iou[iou >= 0.6].tolist()
    return 2 * counts[0] / (counts[1] + counts[2]), float(np.mean(ious))


def test_small_images_are_segmented_at_a_resolution_their_nuclei_need(shared_data):
    """The four real images shrunk to 512² and 1024² (as the 2019 Kaggle set and HPA website
    downloads come) score F1 within 0.02 of their full size, and outlines as close (mean IoU of
    matched cells within 0.01); at the fixed 1/4 scale the 512² ones fall further (blocky
    masks: their nuclei are ~5 px there)."""
    real = [_real(image_id) for image_id in real_image_ids()]
    full_f1, full_iou = _pooled(SegmentConfig(), real)
    fixed = SegmentConfig(classical=ClassicalConfig(min_working_nucleus_radius=0))
    for side in (1024, 512):
        items = [_zoom(image, truth, side / 2048) for image, truth in real]
        f1, iou = _pooled(SegmentConfig(), items)
        assert f1 >= full_f1 - 0.02 and iou >= full_iou - 0.01, (side, f1, iou, full_f1, full_iou)
    assert _pooled(fixed, items)[0] < full_f1 - 0.02


def test_working_scale_follows_the_nuclei(shared_data):
    p = ClassicalConfig()
    image, _ = _real(real_image_ids()[0])
    assert working_scale(image, p) == p.scale  # HPA's 2048²: nuclei of ~20 px at 1/4 already
    small = _zoom(image, image[0], 0.25)[0]
    assert 0.4 <= working_scale(small, p) <= 1.0  # 512²: radius ≥ 10 px at the working scale
    assert working_scale(small, p) * 16 == round(working_scale(small, p) * 16)  # one size for like nuclei
    assert to_working_scale(small, p).shape[1] == round(512 * working_scale(small, p))
    assert working_scale(small, p.model_copy(update={"min_working_nucleus_radius": 0})) == p.scale
    assert working_scale(np.zeros((4, 512, 512), np.uint8), p) == p.scale  # no nuclei: as configured
    assert working_scale(small, HpaConfig()) == working_scale(small, p)  # both backends follow alike


def test_fill_holes_is_scipys():
    from scipy import ndimage as ndi

    rng = np.random.default_rng(0)
    for _ in range(200):
        mask = rng.random(tuple(rng.integers(1, 60, 2))) < rng.random()
        assert np.array_equal(fill_holes(mask), ndi.binary_fill_holes(mask))
