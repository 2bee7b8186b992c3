"""Predict without a Ray run: the fold models' ensemble, a run's settings, inputs refused with clear
errors, the failures file, the submission checker's CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from hpa_ray.core.config import ConfigError, load_config, write_resolved
from hpa_ray.core.images import InputError
from hpa_ray.predict.config import PredictConfig
from hpa_ray.predict.run import Ensemble, load_run, main, run_predict
from hpa_ray.train.config import TrainConfig
from hpa_ray.train.model import ModelError
from tests.helpers import RUN_CROP as CROP
from tests.helpers import _make_run


def test_ensemble_means_models_and_flips(run_dir):
    run = load_run(run_dir, PredictConfig())
    crops = np.random.default_rng(0).integers(0, 255, (5, 4, CROP, CROP), dtype=np.uint8)

    def scores(paths, tta):
        return Ensemble(json.dumps({"paths": list(paths), "train": run.train.model_dump()}), tta=tta)(crops)

    plain = scores(run.paths, tta=False)
    assert plain.shape == (5, 19) and ((plain > 0) & (plain < 1)).all()
    each = [scores([p], tta=False) for p in run.paths]
    assert np.allclose(plain, np.mean(each, axis=0), atol=1e-6)  # the mean of the folds' sigmoids
    # TTA: the mean over the crop, its horizontal and its vertical flip (each flip of the
    # crops themselves scored without TTA), not merely something else than no TTA.
    tta = Ensemble(json.dumps({"paths": list(run.paths), "train": run.train.model_dump()}), tta=True)(crops)
    flipped = [Ensemble(json.dumps({"paths": list(run.paths), "train": run.train.model_dump()}), tta=False)(
        np.ascontiguousarray(c)) for c in (crops, crops[..., ::-1], crops[..., ::-1, :])]  # fmt: skip
    assert not np.allclose(tta, plain) and np.allclose(tta, np.mean(flipped, axis=0), atol=1e-5)


def test_the_failures_file_goes_when_a_run_has_none(tmp_path):
    from hpa_ray.predict.run import _write_failures, failures_path

    out = tmp_path / "sub.csv"
    assert failures_path(out) == str(tmp_path / "sub.failed.csv")
    assert failures_path("s3://bucket/runs/sub.csv") == "s3://bucket/runs/sub.failed.csv"
    rows = pd.DataFrame({"ID": ["a", "b"], "status": ["ok", "error"], "error": ["", "cannot decode b_red.png"]})
    _write_failures(rows, out)
    assert pd.read_csv(failures_path(out)).to_dict("records") == [{"ID": "b", "error": "cannot decode b_red.png"}]
    _write_failures(rows.assign(status="ok"), out)
    assert not (tmp_path / "sub.failed.csv").exists()


def test_bad_models_and_inputs_get_clear_errors(run_dir, tmp_path, capsys):
    with pytest.raises(ModelError, match="no models under"):
        load_run(tmp_path, PredictConfig())
    with pytest.raises(ModelError, match=f"fold of a run: give the run directory, {re.escape(str(run_dir))}$"):
        load_run(run_dir / "fold-0", PredictConfig())
    mixed = _make_run(tmp_path / "mixed")
    write_resolved(TrainConfig(model="tiny", image_size=48), mixed / "fold-1" / "config.yaml")
    with pytest.raises(ModelError, match="differ in image_size"):
        load_run(mixed, PredictConfig())
    architectures = _make_run(tmp_path / "architectures")
    write_resolved(TrainConfig(model="small"), architectures / "fold-1" / "config.yaml")
    args = ["--images", str(tmp_path), "--out", str(tmp_path / "mixed.csv")]
    assert main([*args, "--run-dir", str(architectures)]) == 2  # the CLI: a message and exit 2
    assert "differ in model: {'fold-0': 'tiny', 'fold-1': 'small'}" in capsys.readouterr().err
    assert not (tmp_path / "mixed.csv").exists()
    wrong = _make_run(tmp_path / "wrong")
    write_resolved(TrainConfig(model="efficientnet-b2"), wrong / "fold-0" / "config.yaml")
    write_resolved(TrainConfig(model="efficientnet-b2"), wrong / "fold-1" / "config.yaml")
    with pytest.raises(ModelError, match="not weights of a efficientnet-b2"):
        load_run(wrong, PredictConfig())
    (tmp_path / "ids.csv").write_text("ID\nx\ny\nx \n")  # an ID with a space after it is the same ID
    with pytest.raises(InputError, match="'x' is listed more than once"):
        run_predict(tmp_path, run_dir, tmp_path / "s.csv", PredictConfig(), ids_csv=tmp_path / "ids.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images in"):
        run_predict(tmp_path / "empty", run_dir, tmp_path / "s.csv", PredictConfig())
    assert main(["--images", str(tmp_path / "empty"), "--run-dir", str(run_dir), "--out", str(tmp_path / "s.csv")]) == 2


def test_submission_validate_cli(tmp_path, shared_data):
    def validate(*args):
        return subprocess.run([sys.executable, "-m", "hpa_ray.predict.submission", "validate", *args],
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    ok = validate(str(shared_data / "sample_submission.csv"))
    assert ok.returncode == 0 and "valid: 559 rows" in ok.stdout
    (tmp_path / "bad.csv").write_text("ID,ImageWidth,ImageHeight,PredictionString\nx,8,8,0 2.0 abc\n")
    bad = validate(str(tmp_path / "bad.csv"))
    assert bad.returncode == 1 and "row 2 (ID 'x'), triple 1: confidence 2.0" in bad.stderr
    (tmp_path / "ragged.csv").write_text("ID,ImageWidth,ImageHeight,PredictionString\nx,8,8,\ny,8,8,,0\n")
    ragged = validate(str(tmp_path / "ragged.csv"))
    assert ragged.returncode == 1 and "cannot be read as a CSV: Expected 4 fields in line 3, saw 5" in ragged.stderr


def test_segment_settings_come_from_the_run_unless_overridden(run_dir):
    assert load_run(run_dir, PredictConfig()).segment.crop_size == CROP
    changed = load_run(run_dir, PredictConfig(segment={"crop_size": 40, "classical": {"scale": 0.5}}))
    assert changed.segment.crop_size == 40 and changed.segment.classical.scale == 0.5
    with pytest.raises(ConfigError, match="overrides: segment: unknown key 'crop_sise'"):
        load_config(PredictConfig, None, ["segment.crop_sise=40"])  # when the config loads, before any model
