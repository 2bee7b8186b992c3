"""The weak-label pieces on hand-made arrays: bags, pooling, the bag loss, predict's scoring
rules, the validation metrics, the generator's per-class cell fractions; and a tiny bag model
that learns which cell of a bag makes the image's label."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from hpa_ray.core.schema import NEGATIVE, NUM_CLASSES, crop_field
from hpa_ray.predict.config import PredictConfig
from hpa_ray.predict.scoring import cell_scores, fuse, negative_complement
from hpa_ray.synth.config import SynthConfig
from hpa_ray.synth.generate import _sample_labels, image_labels_of
from hpa_ray.train.bags import collate_bags, image_bags, sample_bags
from hpa_ray.train.config import TrainConfig
from hpa_ray.train.methods import validation_metrics
from hpa_ray.train.model import BagClassifier, bag_loss, build_model


def test_bags_pad_mask_and_draw_without_replacement():
    rng = np.random.default_rng(0)
    members = [np.array([7]), np.arange(10, 13), np.arange(100, 140)]
    index, mask = sample_bags(members, 4, rng)
    assert index.shape == mask.shape == (3, 4)
    assert mask.sum(1).tolist() == [1, 3, 4], "one-cell image, a short bag padded, a long one cut to 4"
    assert index[0, 0] == 7 and index[0, 1:].tolist() == [0, 0, 0]
    assert sorted(index[1, :3]) == [10, 11, 12]
    assert len(set(index[2])) == 4 and set(index[2]) <= set(range(100, 140))
    draws = {tuple(sorted(sample_bags([np.arange(40)], 4, rng)[0][0])) for _ in range(20)}
    assert len(draws) > 1, "a long image gives other cells each time"
    with pytest.raises(ValueError, match="no cells"):
        sample_bags([np.array([], int)], 4, rng)


def _image_rows(sizes: list[int], side: int = 8) -> tuple[pa.Table, list[np.ndarray]]:
    rows, crops_of = [], []
    for i, n in enumerate(sizes):
        crops = np.arange(n * 4 * side * side, dtype=np.int64).reshape(n, 4, side, side) % 251 + i
        crops = crops.astype(np.uint8)
        labels = np.eye(NUM_CLASSES, dtype=np.uint8)[i % NUM_CLASSES]
        table = pa.table({"image_id": [f"img{i}"] * n,
                          "crop": pa.array([c.tobytes() for c in crops], crop_field(4, side).type),
                          "labels": [labels.tolist()] * n}).cast(pa.schema([
                              pa.field("image_id", pa.string()), crop_field(4, side),
                              pa.field("labels", pa.list_(pa.uint8()))]))  # fmt: skip
        rows.append(image_bags(table))
        crops_of.append(crops)
    return pa.concat_tables(rows), crops_of


def test_image_rows_collate_into_padded_bags():
    table, crops_of = _image_rows([1, 5, 3])
    batch = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    batch["labels"] = np.stack(batch["labels"])
    every = collate_bags(batch, bag_size=None, augment=False)
    assert every["crops"].shape == (3, 5, 4, 8, 8) and every["crops"].dtype == torch.uint8
    assert every["mask"].sum(1).tolist() == [1, 5, 3]
    for b, crops in enumerate(crops_of):
        assert np.array_equal(every["crops"][b, : len(crops)].numpy(), crops), "every cell, in order"
        assert not every["crops"][b, len(crops) :].any(), "padding is zeros"
    assert every["labels"].shape == (3, NUM_CLASSES) and every["labels"][1, 1] == 1
    drawn = collate_bags(batch, bag_size=2, augment=True, rng=np.random.default_rng(1))
    assert drawn["crops"].shape == (3, 2, 4, 8, 8) and drawn["mask"].sum(1).tolist() == [1, 2, 2]
    flips = [(t, t[:, ::-1], t[:, :, ::-1], t[:, ::-1, ::-1]) for c in crops_of[1] for t in (c, c.transpose(0, 2, 1))]
    variants = {np.ascontiguousarray(v).tobytes() for four in flips for v in four}
    drawn_cells = [np.ascontiguousarray(c).tobytes() for c in drawn["crops"][1].numpy()]
    assert all(c in variants for c in drawn_cells), "each drawn cell is one of the image's, flipped"
    assert drawn_cells[0] != drawn_cells[1], "two different cells"


def _bag_model(pooling: str) -> BagClassifier:
    torch.manual_seed(0)
    return build_model(TrainConfig(model="tiny", method="bag", pooling=pooling)).eval()


@pytest.mark.parametrize("pooling", ["attention", "lse", "max", "mean"])
def test_pooling_ignores_padding(pooling):
    model = _bag_model(pooling)
    x = torch.randn(1, 4, 4, 16, 16)
    mask = torch.tensor([[True, True, False, False]])
    with torch.no_grad():
        cells, image = model(x, mask)
        x2 = x.clone()
        x2[0, 2:] = torch.randn(2, 4, 16, 16) * 10
        cells2, image2 = model(x2, mask)
    assert cells.shape == (1, 4, NUM_CLASSES) and image.shape == (1, NUM_CLASSES)
    assert torch.allclose(image, image2) and torch.allclose(cells[0, :2], cells2[0, :2])


def test_max_and_lse_pool_the_cell_logits():
    logits = torch.tensor([[[0.0, 2.0], [4.0, -1.0], [9.0, 9.0]]])  # 1 bag, 3 cells (last is padding), 2 classes
    mask = torch.tensor([[True, True, False]])
    model = _bag_model("max")
    assert torch.equal(model.pool(None, logits, mask), torch.tensor([[4.0, 2.0]]))
    model = _bag_model("lse")
    for r, expect in ((50.0, [4.0, 2.0]), (1e-3, [2.0, 0.5])):  # sharp: max; soft: mean
        model.lse_r = r
        assert torch.allclose(model.pool(None, logits, mask), torch.tensor([expect]), atol=2e-2)


def test_bag_loss_is_image_bce_plus_weighted_cell_bce():
    cell = torch.tensor([[[0.0], [2.0], [5.0]]])
    image = torch.tensor([[1.0]])
    mask = torch.tensor([[True, True, False]])
    labels = torch.tensor([[1.0]])

    def bce(z, y):
        return float(-(y * np.log(1 / (1 + np.exp(-z))) + (1 - y) * np.log(1 - 1 / (1 + np.exp(-z)))))

    expect = bce(1.0, 1) + 0.5 * (bce(0.0, 1) + bce(2.0, 1)) / 2
    assert abs(bag_loss(cell, image, mask, labels, 0.5).item() - expect) < 1e-6
    assert abs(bag_loss(cell, image, mask, labels, 0.0).item() - bce(1.0, 1)) < 1e-6


def test_fusion_negative_rule_and_weights_by_hand():
    cell = np.array([[0.8, 0.2, 0.1], [0.4, 0.5, 0.3]])
    image = np.array([[0.5, 1.0, 0.2], [0.5, 1.0, 0.2]])
    assert np.allclose(fuse(cell, image, "product", 0.3), [[0.4, 0.2, 0.02], [0.2, 0.5, 0.06]])
    assert np.allclose(fuse(cell, image, "blend", 0.25), [[0.725, 0.4, 0.125], [0.425, 0.625, 0.275]])
    assert fuse(cell, image, "cell", 0.3) is cell
    # A cell model has no image head: the image's probability is its most confident cell's.
    assert np.allclose(fuse(cell, None, "product", 0.3), cell * [0.8, 0.5, 0.3])
    two_images = fuse(cell, None, "product", 0.3, image_of=np.array([5, 9]))
    assert np.allclose(two_images, cell * cell), "each cell is its own image's most confident cell"
    probs = np.full((2, NUM_CLASSES), 0.1)
    probs[0, 3] = 0.9
    probs[:, NEGATIVE] = 0.5
    neg = negative_complement(probs)
    assert np.allclose(neg[:, NEGATIVE], [0.1, 0.9]) and np.array_equal(neg[:, :NEGATIVE], probs[:, :NEGATIVE])
    cfg = PredictConfig(fusion="cell", border_weight=0.5, small_cell_weight=0.2, small_cell_fraction=0.5)
    scored = cell_scores(probs, None, np.array([True, False]), np.array([100, 10]), cfg)
    assert np.allclose(scored[0], probs[0] * 0.5), "cut by the border"
    assert np.allclose(scored[1], probs[1] * 0.2), "under half its image's median area"
    same = cell_scores(probs, None, np.array([False, False]), np.array([100, 10]), PredictConfig(fusion="cell"))
    assert np.allclose(same, probs), "no fusion, no rule, no weight: the probabilities as they are"


def test_validation_reports_cell_and_image_ap_and_selects_by_method():
    labels = np.zeros((4, NUM_CLASSES), np.float32)
    labels[:2, 0] = 1  # image 1 has class 0; image 2 not
    cell = np.full((4, NUM_CLASSES), 0.5, np.float32)
    cell[:, 0] = [0.9, 0.1, 0.2, 0.3]  # image 1 is ranked first by its max cell, not by every cell
    out = {"loss": np.array([0.5]), "cell": cell, "cell_labels": labels, "image_of": np.array([1, 1, 2, 2])}
    metrics = validation_metrics(out, "cell")
    assert metrics["val_image_map"] == 1.0 and metrics["val_cell_map"] < 1.0
    assert metrics["val_map"] == metrics["val_cell_map"] and metrics["ap_0"] == metrics["val_cell_map"]
    assert validation_metrics(out, "image")["val_map"] == 1.0


def test_generator_shows_variable_classes_in_a_minority_of_cells():
    def fractions(cfg: SynthConfig) -> np.ndarray:
        rng = np.random.default_rng(0)
        shown, possible = np.zeros(NUM_CLASSES), np.zeros(NUM_CLASSES)
        for _ in range(1500):
            cells = _sample_labels(12, cfg, rng)
            image = image_labels_of(cells)
            shown += cells.sum(0)
            possible += image * len(cells)
            assert image[NEGATIVE] == 0 or image.sum() == 1, "Negative excludes the other labels"
            if image[:NEGATIVE].any():
                assert (cells[:, :NEGATIVE].any(1) | (cells[:, NEGATIVE] == 1)).all()
        return shown[:NEGATIVE] / np.maximum(possible[:NEGATIVE], 1)

    default, mild = fractions(SynthConfig()), fractions(SynthConfig(class_show_probability={}))
    assert 0.1 < default[11] < 0.3 and 0.3 < default[12] < 0.5, "spindle and centrosome in a minority"
    assert abs(default[0] - mild[0]) < 0.05 and 0.7 < mild[0] < 0.9, "common classes as before"
    assert np.all(mild > 0.7), "{} makes every class as common as before"
    assert np.all(default <= mild + 0.05), "never milder than before"


def test_a_cell_that_shows_none_of_only_variable_labels_is_negative():
    cfg = SynthConfig(negative_fraction=0, max_labels=1, class_show_probability={c: 0.05 for c in range(18)})
    rng = np.random.default_rng(3)
    cells = np.concatenate([_sample_labels(10, cfg, rng) for _ in range(50)])
    negative = cells[:, NEGATIVE] == 1
    assert negative.mean() > 0.5 and not cells[negative, :NEGATIVE].any()


def test_a_tiny_bag_model_learns_which_cell_makes_the_label():
    """Bags of 6 noise cells; in a positive bag one cell carries a bright green spot: the image
    head must learn the bag's label and the cell head must rank the spotted cell first."""
    rng = np.random.default_rng(0)
    torch.manual_seed(0)

    def bags(n):
        x = rng.normal(0, 0.3, (n, 6, 4, 16, 16)).astype(np.float32)
        y = np.zeros((n, NUM_CLASSES), np.float32)
        which = rng.integers(0, 6, n)
        for b in range(n):
            if b % 2:
                x[b, which[b], 1, 6:10, 6:10] += 3
                y[b, 0] = 1
        return torch.from_numpy(x), torch.from_numpy(y), which

    model = build_model(TrainConfig(model="tiny", method="bag", pooling="attention"))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    mask = torch.ones(16, 6, dtype=torch.bool)
    for _ in range(150):
        x, y, _ = bags(16)
        cells, image = model(x, mask)
        loss = bag_loss(cells, image, mask, y, 0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, y, which = bags(64)
    with torch.no_grad():
        cells, image = model(x, torch.ones(64, 6, dtype=torch.bool))
    from hpa_ray.core.metrics import per_class_ap

    assert per_class_ap(y.numpy(), torch.sigmoid(image).numpy())[0] > 0.9, "image label learnt (chance 0.5)"
    positive = y[:, 0] == 1
    top = cells[positive, :, 0].argmax(1).numpy()
    assert (top == which[positive.numpy()]).mean() > 0.8, "the spotted cell ranks first (chance 1/6)"
