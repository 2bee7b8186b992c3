"""The visual report: every figure a real PNG of its size, index.html linking them, rendered in Chromium."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hpa_ray.config import FoldsConfig, PredictConfig, SegmentConfig
from hpa_ray.folds import make_folds, read_label_matrix
from hpa_ray.predict import run_predict
from hpa_ray.report import main, run_report
from hpa_ray.schema import NUM_CLASSES
from hpa_ray.segment import run_segment
from tests.helpers import chromium_dom, loaded_images
from tests.test_predict import _make_run

# figure → (width, height) in pixels: figsize × DPI of report_figures
SIZES = {
    "labels_per_class.png": (900, 600),
    "labels_cooccurrence.png": (900, 800),
    "labels_per_image.png": (600, 400),
    "cells_per_image.png": (600, 400),
    "outlines_0.png": (500, 500),
    "folds_positives.png": (1000, 500),
    "training_curves.png": (1100, 400),
    "training_class_ap.png": (900, 700),
    "evaluation_ap.png": (900, 700),
}


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


def _full_report(pipeline, out):
    return run_report(out, labels=pipeline["labels"], segment_dir=pipeline["root"] / "seg",
                      folds=pipeline["root"] / "folds.csv", run_dir=pipeline["run"], truth=pipeline["truth"],
                      submission=pipeline["root"] / "submission.csv")  # fmt: skip


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


def test_real_label_file_alone_and_bad_inputs(shared_data, tmp_path, capsys):
    assert main(["--out", str(tmp_path / "r"), "--labels", str(shared_data / "train.csv")]) == 0
    text = (tmp_path / "r" / "index.html").read_text()
    assert re.findall(r'<img src="([^"]+)"', text) == ["labels_per_class.png", "labels_cooccurrence.png",
                                                        "labels_per_image.png"]  # fmt: skip
    with Image.open(tmp_path / "r" / "labels_per_class.png") as image:
        assert image.size == SIZES["labels_per_class.png"]
    (tmp_path / "folds.csv").write_text("image_id,fold\nnot-there,0\n")
    assert main(["--out", str(tmp_path / "x"), "--labels", str(shared_data / "train.csv"),
                 "--folds", str(tmp_path / "folds.csv")]) == 2  # fmt: skip
    assert "no image in common" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "y"), "--run-dir", str(tmp_path / "no-run")]) == 2  # once: an empty report
    assert "no fold-K/metrics.csv" in capsys.readouterr().err


def test_index_renders_in_headless_chromium(pipeline, tmp_path):
    index = _full_report(pipeline, tmp_path / "report")
    count, broken = loaded_images(chromium_dom(index.as_uri(), tmp_path / "profile"))
    assert count == len(list((tmp_path / "report").glob("*.png"))) > 0 and not broken, broken
