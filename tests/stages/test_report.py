"""The visual report of a pipeline run on a local Ray: every figure a real PNG of its size,
index.html linking them, rendered in Chromium."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hpa_ray.core.schema import NUM_CLASSES
from hpa_ray.folds.config import FoldsConfig
from hpa_ray.folds.stratify import make_folds, read_label_matrix
from hpa_ray.predict.config import PredictConfig
from hpa_ray.predict.run import run_predict
from hpa_ray.report.build import run_report
from hpa_ray.report.predictions import SHOWN_IMAGES, read_predictions
from hpa_ray.segment.config import SegmentConfig
from hpa_ray.segment.stage import run_segment
from tests.helpers import REPORT_SIZES as SIZES
from tests.helpers import _make_run, chromium_dom, loaded_images


@pytest.fixture(scope="module")
def pipeline(ray_local, synth_set, tmp_path_factory):
    """A segment dir, folds, a run's metrics and a submission for the six synthetic images."""
    root = tmp_path_factory.mktemp("report")
    run_segment(synth_set / "images", root / "seg", SegmentConfig(crop_size=32), synth_set / "labels.csv")
    ids, y = read_label_matrix(synth_set / "labels.csv")
    pd.DataFrame({"image_id": ids, "fold": make_folds(y, FoldsConfig(n_folds=2))}).to_csv(
        root / "folds.csv", index=False
    )
    run = _make_run(root / "run")
    rng = np.random.default_rng(0)
    for k in range(2):  # metrics.csv as train writes it
        table = pd.DataFrame({"epoch": range(4), "train_loss": [0.6, 0.4, 0.3, 0.25],
                              "val_loss": [0.5, 0.4, 0.35, 0.36], "val_map": [0.1, 0.2, 0.3, 0.28]})  # fmt: skip
        for c in range(NUM_CLASSES):
            table[f"ap_{c}"] = rng.uniform(0, 1, 4)
        table.to_csv(run / f"fold-{k}" / "metrics.csv", index=False)
    run_predict(synth_set / "images", run, root / "submission.csv", PredictConfig())
    return {"root": root, "labels": synth_set / "labels.csv", "truth": synth_set / "truth.parquet", "run": run}


def _full_report(pipeline, out, images=None):
    return run_report(out, labels=pipeline["labels"], segment_dir=pipeline["root"] / "seg",
                      folds=pipeline["root"] / "folds.csv", run_dir=pipeline["run"], truth=pipeline["truth"],
                      submission=pipeline["root"] / "submission.csv", images=images)  # fmt: skip


def test_every_part_writes_real_images_and_the_index_links_them(pipeline, tmp_path):
    index = _full_report(pipeline, tmp_path / "report")
    pngs = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    for name, size in SIZES.items():
        with Image.open(tmp_path / "report" / name) as image:
            assert image.format == "PNG" and image.size == size, name
    with Image.open(tmp_path / "report" / "rare_class_cells.png") as image:
        assert image.width > 300 and image.height > 150
    linked = re.findall(r'<img src="([^"]+)"', index.read_text())
    assert sorted(linked) == pngs and len(pngs) >= len(SIZES) + 1
    assert "All 6 images segmented without error" in index.read_text()
    assert "cell outlines over the image" in index.read_text()  # read from the recorded image directory
    for title in ("Labels", "Rare classes", "Segmentation", "Folds", "Training", "Evaluation"):
        assert f"<h2>{title}</h2>" in index.read_text()


def test_index_and_predictions_view_render_in_headless_chromium(pipeline, synth_set, tmp_path):
    index = _full_report(pipeline, tmp_path / "report", images=synth_set / "images")
    index_count, broken = loaded_images(chromium_dom(index.as_uri(), tmp_path / "profile"))
    assert index_count > 0 and not broken, broken
    page = tmp_path / "report" / "predictions.html"
    assert 'href="predictions.html"' in index.read_text()
    view_count, broken = loaded_images(chromium_dom(page.as_uri(), tmp_path / "profile"))
    assert view_count > 0 and not broken, broken
    assert index_count + view_count == len(list((tmp_path / "report").glob("*.png")))
    # the view of a real prediction: every predicted image read, its cells matched to the truth's
    submission = pd.read_csv(pipeline["root"] / "submission.csv", keep_default_na=False)
    predicted = int((submission.PredictionString.str.strip() != "").sum())
    linked = re.findall(r'<img src="([^"]+)"', page.read_text())
    assert linked == [f"predicted_{k}.png" for k in range(min(SHOWN_IMAGES, predicted))] + ["predicted_cells.png"]
    with Image.open(tmp_path / "report" / "predicted_0.png") as image:
        assert image.size == (1200, 660)
    images, notes = read_predictions(str(pipeline["root"] / "submission.csv"), str(synth_set / "images"),
                                     str(synth_set / "truth.parquet"))  # fmt: skip
    assert not notes and len(images) == predicted
    assert all(item.cells.max() == len(item.scores) for item in images)
    matched = np.concatenate([item.match for item in images])
    assert (matched >= 0).mean() >= 0.8, "the segmentation finds most true cells at IoU 0.6"
