"""Registries: a backend and a backbone added from a test module, through the registries alone
(`segment.plugins`, `train.plugins`), carry segment → train → predict."""

from __future__ import annotations

import pandas as pd

from hpa_ray.core.config import load_config
from hpa_ray.folds.config import FoldsConfig
from hpa_ray.folds.stratify import write_folds
from hpa_ray.predict.config import PredictConfig
from hpa_ray.predict.run import run_predict
from hpa_ray.predict.submission import parse_triples, read_submission
from hpa_ray.segment.config import SegmentConfig
from hpa_ray.segment.stage import run_segment
from hpa_ray.train.config import TrainConfig
from hpa_ray.train.fit import fit_fold

PLUGIN = "tests.toy_plugin"


def test_a_plugin_backend_and_backbone_run_segment_train_predict(ray_local, synth_set, tmp_path):
    seg_cfg = SegmentConfig(plugins=[PLUGIN], backend="toy", crop_size=32, toy={"threshold": 0.3, "grow": 8})
    seg = run_segment(synth_set / "images", tmp_path / "seg", seg_cfg, synth_set / "labels.csv")
    assert (seg.manifest.status == "ok").all() and seg.cells >= 6
    saved = load_config(SegmentConfig, tmp_path / "seg" / "segment_config.yaml")
    assert saved.backend == "toy" and saved.section().grow == 8, "the run records the plugin backend's section"

    write_folds(synth_set / "labels.csv", tmp_path / "folds.csv", FoldsConfig(n_folds=2))
    train = TrainConfig(plugins=[PLUGIN], model="toy-net", epochs=1, batch_size=16, cpus_per_worker=0.5)
    best = fit_fold(tmp_path / "seg" / "cells", tmp_path / "folds.csv", 0, tmp_path / "run", train)
    assert 0 <= best["val_map"] <= 1

    result = run_predict(synth_set / "images", tmp_path / "run", tmp_path / "sub.csv",
                         PredictConfig(top_k=2, min_confidence=0.0))  # fmt: skip
    assert (result.images.status == "ok").all()
    sub = read_submission(tmp_path / "sub.csv")
    assert list(sub.ID) == sorted(pd.read_csv(synth_set / "labels.csv").ID)
    for row, n_cells in zip(sub.itertuples(), result.images.n_cells):
        assert len(parse_triples(row.PredictionString)) == 2 * n_cells, (
            "the toy backend's cells, the toy model's scores"
        )
