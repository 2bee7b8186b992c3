"""The segmentation stage on a real local Ray: outputs, bad inputs, resume, both backends."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from hpa_ray.core.config import ConfigError, load_config
from hpa_ray.core.masks import label_image
from hpa_ray.core.schema import CHANNELS, crops_to_numpy, parse_labels
from hpa_ray.evaluate.score import match_cells
from hpa_ray.segment.backends.standin import save_standin
from hpa_ray.segment.config import SegmentConfig
from hpa_ray.segment.stage import EXIT_SOME_FAILED, main, run_segment
from hpa_ray.synth.config import SynthConfig
from hpa_ray.synth.generate import make_image

CROP = 48
CFG = SegmentConfig(crop_size=CROP)


def _copy_image(src, dst, image_id, new_id):
    for c in CHANNELS:
        shutil.copy(src / f"{image_id}_{c}.png", dst / f"{new_id}_{c}.png")


@pytest.fixture(scope="module")
def messy(synth_set, tmp_path_factory):
    """The synthetic set plus one image of every kind of bad input, and a CSV with bad rows."""
    root = tmp_path_factory.mktemp("messy")
    images = root / "images"
    shutil.copytree(synth_set / "images", images)
    labels = pd.read_csv(synth_set / "labels.csv", dtype=str)
    first = labels.ID[0]
    bad = {
        "truncated": "cannot decode truncated_green.png",
        "nochannel": "missing channel",
        "sizes": "channel sizes differ",
        "rgb": "a colour image with no red in it",
    }
    for new_id in [*bad, "black", "sixteen"]:
        _copy_image(images, images, first, new_id)
    small = make_image(768, SynthConfig(size=768), np.random.default_rng(1)).image
    for c, name in enumerate(CHANNELS):  # another size in the same set
        cv2.imwrite(str(images / f"small_{name}.png"), small[c])
    data = (images / "truncated_green.png").read_bytes()
    (images / "truncated_green.png").write_bytes(data[: len(data) // 3])
    (images / "nochannel_yellow.png").unlink()
    cv2.imwrite(str(images / "sizes_blue.png"), np.zeros((512, 512), np.uint8))
    cv2.imwrite(str(images / "rgb_red.png"), np.full((1024, 1024, 3), (200, 0, 0), np.uint8))  # blue under red's name
    for c in CHANNELS:
        cv2.imwrite(str(images / f"black_{c}.png"), np.zeros((1024, 1024), np.uint8))
        eight = cv2.imread(str(images / f"sixteen_{c}.png"), 0)
        (images / f"sixteen_{c}.png").unlink()
        cv2.imwrite(str(images / f"sixteen_{c}.tif"), eight.astype(np.uint16) * 257)
    extra = pd.DataFrame(
        {
            "ID": [*bad, "black", "sixteen", "small", "badlabel", "../evil", "dup", "dup"],
            "Label": ["1"] * 7 + ["7|20", "1", "2", "3"],
        }
    )
    _copy_image(images, images, first, "badlabel")
    _copy_image(images, images, first, "dup")
    pd.concat([labels, extra]).to_csv(root / "labels.csv", index=False)
    bad.update({"badlabel": "'20' is not an integer 0-18", "../evil": "path separator", "dup": "appears 2 times"})
    return {
        "images": images,
        "labels": root / "labels.csv",
        "bad": bad,
        "good": list(labels.ID),
        "first": first,
        "truth": synth_set / "truth.parquet",
    }


@pytest.fixture(scope="module")
def segmented(messy, ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("seg") / "out"
    result = run_segment(messy["images"], out, CFG, messy["labels"])
    return out, result


def test_manifest_has_every_image_once_with_reasons(messy, segmented):
    out, result = segmented
    manifest = pd.read_parquet(out / "images.parquet")
    assert manifest.image_id.is_unique
    expected = set(messy["good"]) | set(messy["bad"]) | {"black", "sixteen", "small"}
    assert set(manifest.image_id) == expected
    by_id = manifest.set_index("image_id")
    for image_id, reason in messy["bad"].items():
        assert by_id.status[image_id] == "error" and reason in by_id.error[image_id], image_id
    assert (by_id.status[["black", "sixteen", "small", *messy["good"]]] == "ok").all()
    assert (by_id.image_height["small"], by_id.image_width["small"]) == (768, 768)
    assert by_id.n_cells["black"] == 0
    assert by_id.n_cells["sixteen"] == by_id.n_cells[messy["first"]] > 0
    assert (by_id.image_height[messy["good"]] == 1024).all()
    assert result.processed == len(expected) - 4  # four were refused at listing


def test_cells_match_truth_and_carry_labels(messy, segmented):
    out, _ = segmented
    cells = pq.read_table(out / "cells").to_pandas()
    manifest = pd.read_parquet(out / "images.parquet")
    assert len(cells) == manifest.n_cells.sum()
    assert not cells.duplicated(["image_id", "cell_id"]).any()
    truth = pd.read_parquet(messy["truth"])
    tp = n_pred = n_true = 0
    image_labels = pd.read_csv(messy["labels"], dtype=str).drop_duplicates("ID").set_index("ID").Label
    for image_id in messy["good"]:
        mine = cells[cells.image_id == image_id]
        pred = label_image(list(mine.mask_rle), 1024, 1024)  # the k-th cell of `mine` painted k + 1
        true = label_image(list(truth[truth.image_id == image_id].mask_rle), 1024, 1024)
        counts = match_cells(pred, true)
        tp, n_pred, n_true = tp + counts[0], n_pred + counts[1], n_true + counts[2]
        for k, row in enumerate(mine.itertuples(), start=1):
            assert np.array_equal(row.labels, parse_labels(image_labels[image_id]))
            y0, x0, y1, x1 = row.bbox
            assert (pred[y0:y1, x0:x1] == k).sum() == row.area == (pred == k).sum()
    assert n_true >= 15 and 2 * tp / (n_pred + n_true) >= 0.9


def test_crops_read_back_as_tensors_through_ray_and_pyarrow(segmented, ray_local):
    out, _ = segmented
    batch = ray_local.data.read_parquet(str(out / "cells")).take_batch(8, batch_format="pyarrow")
    crops = crops_to_numpy(batch)
    assert crops.shape == (8, len(CHANNELS), CROP, CROP) and crops.dtype == np.uint8
    assert crops.max() > 0
    # Outside the cell the crop is zero: its corners (padding or other cells) hold nothing.
    assert (crops[:, :, 0, 0] == 0).mean() > 0.8
    table = pq.read_table(out / "cells")
    assert crops_to_numpy(table).shape == (table.num_rows, len(CHANNELS), CROP, CROP)
    assert np.array_equal(crops_to_numpy(table.slice(3, 2)), crops_to_numpy(table)[3:5])


def test_rerun_resumes_without_duplicates(messy, segmented):
    out, first = segmented
    parts_before = sorted(p.name for p in (out / "cells").iterdir())
    again = run_segment(messy["images"], out, CFG, messy["labels"])
    assert again.processed == len(messy["bad"]) - 4  # only the failed IDs that passed listing are retried
    assert again.skipped == len(first.manifest) - len(messy["bad"])
    assert sorted(p.name for p in (out / "cells").iterdir()) == parts_before, "failed images write no cells"
    cells = pq.read_table(out / "cells", columns=["image_id", "cell_id"]).to_pandas()
    assert not cells.duplicated().any()


def test_interrupted_write_is_cleaned_and_fixed_image_is_redone(messy, segmented, tmp_path):
    out, _ = segmented
    work = tmp_path / "out"
    shutil.copytree(out, work)
    orphan = work / "cells" / "part-orphan.parquet"
    shutil.copy(next((work / "cells").glob("part-*.parquet")), orphan)  # a write with no manifest part
    images = tmp_path / "images"
    shutil.copytree(messy["images"], images)
    shutil.copy(images / "sixteen_green.tif", images / "truncated_green.tif")
    (images / "truncated_green.png").unlink()
    (images / "truncated_red.png").unlink()
    shutil.copy(images / "sixteen_red.tif", images / "truncated_red.tif")
    result = run_segment(images, work, CFG, messy["labels"])
    assert not orphan.exists()
    manifest = result.manifest.set_index("image_id")
    assert manifest.status["truncated"] == "ok" and manifest.n_cells["truncated"] > 0
    cells = pq.read_table(work / "cells", columns=["image_id", "cell_id"]).to_pandas()
    assert not cells.duplicated().any()
    assert len(cells) == manifest.n_cells.sum()


def test_resume_with_another_config_is_refused_overwrite_starts_over(messy, segmented, tmp_path):
    out, _ = segmented
    work = tmp_path / "out"
    shutil.copytree(out, work)
    other = SegmentConfig(crop_size=CROP + 16)
    with pytest.raises(ConfigError, match="another config"):
        run_segment(messy["images"], work, other, messy["labels"])
    result = run_segment(messy["images"], work, other, messy["labels"], overwrite=True)
    assert result.skipped == 0
    assert load_config(SegmentConfig, work / "segment_config.yaml") == other
    assert crops_to_numpy(pq.read_table(work / "cells", columns=["crop"])).shape[1:] == (4, CROP + 16, CROP + 16)


def test_cli_exit_status_and_summary(messy, ray_local, tmp_path, capsys):
    code = main(
        [
            "--images",
            str(messy["images"]),
            "--labels",
            str(messy["labels"]),
            "--out",
            str(tmp_path / "o"),
            f"crop_size={CROP}",
        ]
    )
    captured = capsys.readouterr()
    assert code == EXIT_SOME_FAILED
    assert "failed: rgb:" in captured.err
    assert "note: no cells found in 1 image(s): black (blank" in captured.err
    assert f"{len(messy['bad'])} failed" in captured.out and "images/s" in captured.out
    good = tmp_path / "good"
    good.mkdir()
    _copy_image(messy["images"], good, messy["first"], messy["first"])
    assert main(["--images", str(good), "--out", str(tmp_path / "g"), f"crop_size={CROP}"]) == 0
    # Into the same directory with another config: refused (exit 2) until --overwrite starts over.
    again = ["--images", str(good), "--out", str(tmp_path / "g"), f"crop_size={CROP + 8}"]
    assert main(again) == 2 and "--overwrite" in capsys.readouterr().err
    assert main([*again, "--overwrite"]) == 0
    assert load_config(SegmentConfig, tmp_path / "g" / "segment_config.yaml").crop_size == CROP + 8
    assert crops_to_numpy(pq.read_table(tmp_path / "g" / "cells", columns=["crop"])).shape[-1] == CROP + 8
    assert main(["--images", str(tmp_path / "none"), "--out", str(tmp_path / "x")]) == 2
    assert main(["--images", str(good), "--out", str(tmp_path / "x"), "crop_sise=3"]) == 2
    assert "unknown key 'crop_sise'" in capsys.readouterr().err


def test_unlabelled_images_get_null_labels(synth_set, ray_local, tmp_path):
    result = run_segment(synth_set / "images", tmp_path / "o", CFG)
    assert (result.manifest.status == "ok").all()
    labels = pq.read_table(tmp_path / "o" / "cells", columns=["labels"]).column("labels")
    assert labels.null_count == len(labels) > 0


def test_hpa_backend_through_ray_with_standin_models(synth_set, ray_local, tmp_path):
    nuclei = save_standin(str(tmp_path / "nuclei.pth"))
    cell = save_standin(str(tmp_path / "cell.pth"))
    cfg = load_config(
        SegmentConfig,
        None,
        [
            "backend=hpa",
            f"hpa.nuclei_model={nuclei}",
            f"hpa.cell_model={cell}",
            "hpa.device=cpu",
            f"crop_size={CROP}",
            "batch_size=3",
        ],
    )
    result = run_segment(synth_set / "images", tmp_path / "o", cfg, synth_set / "labels.csv")
    assert (result.manifest.status == "ok").all(), result.manifest.error.tolist()
    assert result.cells > 0
