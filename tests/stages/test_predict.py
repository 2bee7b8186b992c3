"""Predict: a run's fold models over test images → a valid submission, on a local Ray."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest

from hpa_ray.core.images import InputError
from hpa_ray.core.schema import CHANNELS
from hpa_ray.evaluate.score import evaluate_files
from hpa_ray.predict.config import PredictConfig
from hpa_ray.predict.run import Ensemble, load_run, main, run_predict
from hpa_ray.predict.submission import parse_triples, read_submission
from tests.helpers import RUN_CROP as CROP
from tests.helpers import _make_run


def test_predict_writes_a_valid_submission(ray_local, synth_set, run_dir, tmp_path):
    cfg = PredictConfig(top_k=3, min_confidence=0.0)
    result = run_predict(synth_set / "images", run_dir, tmp_path / "submission.csv", cfg)
    sub = read_submission(tmp_path / "submission.csv")
    assert list(sub.ID) == sorted(pd.read_csv(synth_set / "labels.csv").ID)
    assert (result.images.status == "ok").all() and result.images.n_cells.sum() > 0
    assert set(sub.ImageWidth) == {"1024"} and set(sub.ImageHeight) == {"1024"}
    for row, n_cells in zip(sub.itertuples(), result.images.n_cells):
        triples = parse_triples(row.PredictionString)
        assert len(triples) == 3 * n_cells  # top_k classes for every cell
        assert len({mask for *_, mask in triples}) == n_cells
    scores = evaluate_files(tmp_path / "submission.csv", synth_set / "truth.parquet")
    assert 0.0 <= scores["mAP"] <= 1.0 and scores["predictions"] == 3 * result.images.n_cells.sum()


def test_a_bag_run_scores_each_image_as_one_bag_and_fuses(ray_local, synth_set, tmp_path):
    run_dir = _make_run(tmp_path / "bag-run", method="bag")
    run = load_run(run_dir, PredictConfig())
    assert run.train.method == "bag"
    ensemble = Ensemble(json.dumps({"paths": list(run.paths), "train": run.train.model_dump()}), tta=True)
    crops = np.random.default_rng(1).integers(0, 255, (6, 4, CROP, CROP), dtype=np.uint8)
    cell, image = ensemble.bag(crops)
    assert cell.shape == (6, 19) and image.shape == (19,) and ((image > 0) & (image < 1)).all()
    plain = Ensemble(json.dumps({"paths": list(run.paths), "train": run.train.model_dump()}), tta=False)
    flipped = [plain.bag(np.ascontiguousarray(c)) for c in (crops, crops[..., ::-1], crops[..., ::-1, :])]
    assert np.allclose(cell, np.mean([c for c, _ in flipped], axis=0), atol=1e-5)
    assert np.allclose(image, np.mean([i for _, i in flipped], axis=0), atol=1e-5)
    ((_, tiled),) = ensemble.score_images([crops])
    assert np.allclose(tiled, image[None].repeat(6, 0))
    subs = {}
    for fusion in ("cell", "product"):
        cfg = PredictConfig(top_k=19, min_confidence=0.0, fusion=fusion)
        result = run_predict(synth_set / "images", run_dir, tmp_path / f"{fusion}.csv", cfg)
        assert (result.images.status == "ok").all()
        subs[fusion] = read_submission(tmp_path / f"{fusion}.csv")
    for alone, fused in zip(subs["cell"].PredictionString, subs["product"].PredictionString):
        conf = {(label, mask): float(c) for label, c, mask in parse_triples(alone)}
        for label, c, mask in parse_triples(fused):
            assert float(c) <= conf[(label, mask)] + 1e-6, "cell × image never exceeds the cell alone"


def test_ids_give_every_listed_image_a_row_even_broken_or_missing(ray_local, synth_set, run_dir, tmp_path, capsys):
    images = tmp_path / "images"
    shutil.copytree(synth_set / "images", images)
    ids = sorted(pd.read_csv(synth_set / "labels.csv").ID)
    broken = ids[1]
    (images / f"{broken}_green.png").write_bytes(b"\x89PNG truncated")
    for channel in CHANNELS:  # read without fault, no cell in it
        cv2.imwrite(str(images / f"blank_{channel}.png"), np.zeros((512, 512), np.uint8))
    listed = pd.DataFrame({"ID": ["absent-image", *ids, "blank"], "ImageWidth": 1024, "ImageHeight": 1024})
    listed.to_csv(tmp_path / "ids.csv", index=False)
    code = main(["--images", str(images), "--run-dir", str(run_dir), "--out", str(tmp_path / "s.csv"),
                 "--ids", str(tmp_path / "ids.csv"), "top_k=2"])  # fmt: skip
    assert code == 3
    err = capsys.readouterr().err
    assert (
        f"failed: {broken}: cannot decode {broken}_green.png" in err and "failed: absent-image: no image files" in err
    )
    assert "note: no cells found in 1 image(s): blank (" in err
    sub = read_submission(tmp_path / "s.csv").set_index("ID")
    assert list(sub.index) == list(listed.ID)
    assert sub.loc[broken, "PredictionString"] == "" and sub.loc["absent-image", "PredictionString"] == ""
    assert sub.loc[broken, "ImageWidth"] == "1024"  # from the IDs file: the image could not tell
    assert sub.loc["blank", "PredictionString"] == "" and sub.loc["blank", "ImageWidth"] == "512"
    good = [i for i in ids if i != broken]
    assert all(sub.loc[i, "PredictionString"] for i in good)
    listed = pd.read_csv(tmp_path / "s.failed.csv").set_index("ID")  # every failure, beside the submission
    assert sorted(listed.index) == sorted([broken, "absent-image"]) and "cannot decode" in listed.loc[broken, "error"]


def test_no_image_to_run_still_writes_its_rows_and_ids_matching_no_image_are_refused(synth_set, run_dir, tmp_path):
    """Every image broken: no Ray run, the submission still has its (empty) row. An IDs file none
    of whose IDs is in the directory: the wrong directory or file, said at once (both once crashed
    with a KeyError)."""
    images = tmp_path / "images"
    images.mkdir()
    image_id = sorted(pd.read_csv(synth_set / "labels.csv").ID)[0]
    for c in ("red", "green", "blue", "yellow"):
        shutil.copy(synth_set / "images" / f"{image_id}_{c}.png", images)
    (images / f"{image_id}_green.png").write_bytes(b"\x89PNG truncated")
    result = run_predict(images, run_dir, tmp_path / "s.csv", PredictConfig())
    assert list(result.failed.ID) == [image_id]
    assert read_submission(tmp_path / "s.csv").PredictionString.tolist() == [""]
    pd.DataFrame({"ID": ["test-a", "test-b"]}).to_csv(tmp_path / "ids.csv", index=False)
    with pytest.raises(InputError, match=r"none of the 2 IDs in .*ids.csv has image files in .*images, which holds 1"):
        run_predict(images, run_dir, tmp_path / "t.csv", PredictConfig(), tmp_path / "ids.csv")
    assert not (tmp_path / "t.csv").exists()


def test_gpu_actor_gives_what_the_cpu_task_gives(ray_local, synth_set, run_dir):
    """The actor class (GPU actors on a cluster) against the fused CPU path, on one block."""
    from hpa_ray.core.images import list_images
    from hpa_ray.predict.run import _classify_in_task, _ClassifyActor
    from hpa_ray.segment.stage import build_dataset

    run = load_run(run_dir, PredictConfig())
    run_json = json.dumps({"paths": list(run.paths), "train": run.train.model_dump()})
    cfg_json = PredictConfig(top_k=2).model_dump_json()
    jobs = list_images(synth_set / "images").jobs[:2]
    rows = build_dataset(jobs, run.segment).take_all()
    batch = {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}
    on_task = _classify_in_task(dict(batch), run_json, cfg_json)
    on_actor = _ClassifyActor(run_json, cfg_json)(dict(batch))
    assert list(on_task["prediction_string"]) == list(on_actor["prediction_string"])
    assert all(on_task["prediction_string"])


def test_a_mixed_set_is_predicted_each_image_at_its_own_resolution(ray_local, shared_data, run_dir, tmp_path):
    """Real HPA images in one test set: two at 2048² as Kaggle 2021 has them, two shrunk to 512²
    as the 2019 set and HPA website downloads come. Each is segmented at the working scale its
    nuclei need (1/4 for 2048², finer for 512²), its submission row has its own size, and its
    predicted cells match HPA's own masks at that size (F1 >= 0.9 per size)."""
    from hpa_ray.core.masks import label_image
    from hpa_ray.evaluate.score import match_cells
    from tests.conftest import HPA_REAL, real_image_ids

    images, truths = tmp_path / "images", {}
    images.mkdir()
    for k, image_id in enumerate(real_image_ids()):
        side = 2048 if k % 2 else 512
        truth = cv2.imread(str(HPA_REAL / "masks" / f"{image_id}_predictedmask.png"), cv2.IMREAD_UNCHANGED)
        truths[image_id] = cv2.resize(truth.astype(np.int32), (side, side), interpolation=cv2.INTER_NEAREST_EXACT)
        for channel in ("red", "green", "blue", "yellow"):
            pixels = cv2.imread(str(HPA_REAL / "images" / f"{image_id}_{channel}.png"), cv2.IMREAD_UNCHANGED)
            cv2.imwrite(str(images / f"{image_id}_{channel}.png"),
                        cv2.resize(pixels, (side, side), interpolation=cv2.INTER_AREA))  # fmt: skip
    result = run_predict(images, run_dir, tmp_path / "submission.csv", PredictConfig(top_k=1, min_confidence=0.0))
    rows = result.images.set_index("ID")
    assert (rows.status == "ok").all(), rows.error
    counts = {2048: np.zeros(3, int), 512: np.zeros(3, int)}
    for image_id, truth in truths.items():
        side = truth.shape[0]
        row = rows.loc[image_id]
        assert (int(row.ImageWidth), int(row.ImageHeight)) == (side, side)
        scale = row.working_scale
        assert scale == 0.25 if side == 2048 else 0.4 <= scale <= 1.0, (image_id, side, scale)
        pred = label_image(row.masks.split(), side, side)
        counts[side] += match_cells(pred, truth)
    for side, (tp, n_pred, n_true) in counts.items():
        assert 2 * tp / (n_pred + n_true) >= 0.9, (side, tp, n_pred, n_true)
    sub = read_submission(tmp_path / "submission.csv").set_index("ID")
    assert {(int(w), int(h)) for w, h in zip(sub.ImageWidth, sub.ImageHeight)} == {(2048, 2048), (512, 512)}
