"""The visual report from inputs that need no Ray run: a real label file, a submission drawn over
its images, the scores read back from a prediction string."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hpa_ray.core.masks import encode_mask, label_image
from hpa_ray.core.schema import NUM_CLASSES
from hpa_ray.predict.submission import prediction_string, write_submission
from hpa_ray.report.build import main
from hpa_ray.report.predictions import (
    GALLERY_CELLS,
    gallery_rows,
    prediction_scores,
    read_predictions,
    true_cell_of,
)
from tests.helpers import REPORT_SIZES as SIZES


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
    assert not (tmp_path / "x").exists(), "a report that fails draws nothing, not even the label figures"
    before = {f.name: f.stat().st_mtime_ns for f in (tmp_path / "r").iterdir()}
    assert main(["--out", str(tmp_path / "r"), "--labels", str(shared_data / "train.csv"),
                 "--folds", str(tmp_path / "folds.csv")]) == 2  # fmt: skip
    after = {f.name: f.stat().st_mtime_ns for f in (tmp_path / "r").iterdir()}
    assert after == before, "the report already there is left as it was (no scratch directory either)"
    assert main(["--out", str(tmp_path / "y"), "--run-dir", str(tmp_path / "no-run")]) == 2  # once: an empty report
    assert "no fold-K/metrics.csv" in capsys.readouterr().err
    fold = tmp_path / "run" / "fold-0"
    fold.mkdir(parents=True)
    (fold / "metrics.csv").write_text("epoch,val_macro_ap\n0,0.5\n")
    assert main(["--out", str(tmp_path / "y"), "--run-dir", str(fold)]) == 2
    assert f"one fold of a run: give the run directory, {tmp_path / 'run'}" in capsys.readouterr().err


def _answer_with_truth(truth: pd.DataFrame, wrong: int) -> pd.DataFrame:
    """A submission giving every true cell its true classes at 0.9 and class `wrong` (where it is
    not true) at 0.3."""
    rows = []
    for image_id, cells in truth.groupby("image_id", sort=True):
        scores = np.stack([np.asarray(v, np.float32) for v in cells.labels]) * 0.9
        scores[:, wrong] = np.maximum(scores[:, wrong], 0.3)
        rows.append({"ID": image_id, "ImageWidth": cells.image_width.iloc[0],
                     "ImageHeight": cells.image_height.iloc[0],
                     "PredictionString": prediction_string(list(cells.mask_rle), scores)})  # fmt: skip
    return pd.DataFrame(rows)


def test_predictions_view_marks_right_and_wrong_cells_and_names_what_it_left_out(synth_set, tmp_path, capsys):
    truth = pd.read_parquet(synth_set / "truth.parquet")
    answer = _answer_with_truth(truth, wrong=11)
    missing = answer.iloc[[0]].assign(ID="not-in-the-directory")
    resized = answer.iloc[[1]].assign(ID=answer.ID.iloc[2], ImageWidth=512, ImageHeight=512, PredictionString="")
    write_submission(pd.concat([missing, answer.drop(index=2), resized]), tmp_path / "s.csv")
    images, notes = read_predictions(str(tmp_path / "s.csv"), str(synth_set / "images"),
                                     str(synth_set / "truth.parquet"))  # fmt: skip
    assert [n.split(":")[0] for n in notes] == ["not-in-the-directory"]  # an empty row is not drawn, not noted
    assert len(images) == truth.image_id.nunique() - 1
    assert all((item.match == np.arange(len(item.scores))).all() for item in images), "each cell is its true cell"
    rows = gallery_rows(images)
    for c, crops in rows.items():
        confidences = [float(caption.split()[0]) for _, caption, _ in crops]
        assert confidences == sorted(confidences, reverse=True) and len(crops) <= GALLERY_CELLS
        assert all(right == (conf > 0.5) for (_, _, right), conf in zip(crops, confidences, strict=True)), c
        assert all(crop.shape[0] == 4 and crop.shape[1] > 4 for crop, _, _ in crops)
    assert any("0.30 ✗" in caption for _, caption, _ in rows[11]), "the wrong class's cells, marked wrong"
    # the whole report from the command line; the image of another size is named, not drawn
    write_submission(pd.concat([answer.drop(index=2), answer.iloc[[2]].assign(ImageWidth=512, ImageHeight=512)]),
                     tmp_path / "t.csv")  # fmt: skip
    assert main(["--out", str(tmp_path / "r"), "--submission", str(tmp_path / "t.csv"), "--images",
                 str(synth_set / "images")]) == 0  # fmt: skip
    page = (tmp_path / "r" / "predictions.html").read_text()
    assert f"{answer.ID.iloc[2]}: the image is 1024x1024, the submission says 512x512" in page
    assert "true cell" not in page.split("<figcaption>")[-1], "no truth given: no right or wrong"
    # nothing to draw: exit 2, one line; a submission with neither --truth nor --images is refused
    answer.assign(ID="elsewhere-" + answer.ID).pipe(write_submission, tmp_path / "u.csv")
    assert main(["--out", str(tmp_path / "x"), "--submission", str(tmp_path / "u.csv"), "--images",
                 str(synth_set / "images")]) == 2  # fmt: skip
    assert "none of its predicted images was found" in capsys.readouterr().err
    answer.iloc[:0].pipe(write_submission, tmp_path / "none.csv")  # a header alone: not "not found"
    assert main(["--out", str(tmp_path / "z"), "--submission", str(tmp_path / "none.csv"), "--images",
                 str(synth_set / "images")]) == 2  # fmt: skip
    assert "predicts no cell (no row with a PredictionString)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:
        main(["--out", str(tmp_path / "y"), "--submission", str(tmp_path / "u.csv")])
    assert refused.value.code == 2


def test_prediction_scores_and_cell_matching():
    a = np.zeros((20, 20), bool)
    a[2:10, 2:10] = True
    b = np.zeros((20, 20), bool)
    b[12:18, 12:18] = True
    ma, mb = encode_mask(a), encode_mask(b)
    masks, scores = prediction_scores(f"3 0.5 {ma} 7 0.9 {ma} 3 0.2 {mb}")
    assert masks == [ma, mb] and scores.shape == (2, NUM_CLASSES)
    assert scores[0, 3] == np.float32(0.5) and scores[0, 7] == np.float32(0.9) and scores[0].sum() == np.float32(1.4)
    assert scores[1, 3] == np.float32(0.2) and scores[1].sum() == np.float32(0.2)
    cells = label_image(masks, 20, 20)
    truth = np.zeros((20, 20), np.int32)
    truth[3:11, 2:10] = 1  # a shifted by a row: IoU 56/72 = 0.78
    truth[12:15, 12:18] = 2  # half of b: IoU 0.5
    assert true_cell_of(cells, truth).tolist() == [0, -1]
    assert true_cell_of(cells, np.zeros_like(truth)).tolist() == [-1, -1]
