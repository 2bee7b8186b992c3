"""Where each stage's files go: the on-disk contract between the stages, in one place.

    segment OUT/        cells/part-*.parquet   one row per cell (hpa_ray.core.schema); committed
                                               with _manifest/part-*.parquet (hpa_ray.runtime.sink):
                                               a cells part without its manifest part is
                                               uncommitted and removed when the run resumes
                        images.parquet         one row per image: status, error, n_cells, …
                        segment_config.yaml    how the cells were made (predict needs it)
                        inputs.json            the image directory and labels of the run
    training RUN/       config.yaml            the run's resolved TrainConfig
                        segment_config.yaml    copied from the cells' segment output
                        fold-K/                one per fold (below); ray_results/: Ray's own
    fold RUN/fold-K/    config.yaml            how to rebuild the model (architecture, plugins,
                                               crop size): predict reads it
                        best/model.pt          the best epoch's weights; best/metrics.json
                        metrics.jsonl          one line per epoch report, appended (restarts too)
                        metrics.csv            per epoch, restarts deduplicated; tensorboard/
    search RUN/         tune_config.yaml, trials.csv, best_config.yaml, tensorboard/hparams,
                        trials/TRIAL/          a training run of its own (fold-K/ inside)

Each directory is owned by one run at a time (`hpa_ray.core.locks`); segment and train resume into
theirs. Paths are local or URIs (`hpa_ray.core.storage`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hpa_ray.core import storage

CELLS, MANIFEST_PARTS = "cells", "_manifest"
SEGMENT_CONFIG = "segment_config.yaml"


@dataclass(frozen=True)
class SegmentOutput:
    root: str

    @classmethod
    def of_cells(cls, cells_dir: str) -> SegmentOutput:
        """The segment output a cells directory belongs to."""
        return cls(storage.parent(str(cells_dir).rstrip("/")))

    cells = property(lambda self: storage.join(self.root, CELLS))
    manifest_parts = property(lambda self: storage.join(self.root, MANIFEST_PARTS))
    manifest = property(lambda self: storage.join(self.root, "images.parquet"))
    config = property(lambda self: storage.join(self.root, SEGMENT_CONFIG))
    inputs = property(lambda self: storage.join(self.root, "inputs.json"))


@dataclass(frozen=True)
class Fold:
    root: str

    config = property(lambda self: storage.join(self.root, "config.yaml"))
    best_model = property(lambda self: storage.join(self.root, "best", "model.pt"))
    best_metrics = property(lambda self: storage.join(self.root, "best", "metrics.json"))
    metrics_jsonl = property(lambda self: storage.join(self.root, "metrics.jsonl"))
    metrics_csv = property(lambda self: storage.join(self.root, "metrics.csv"))
    tensorboard = property(lambda self: storage.join(self.root, "tensorboard"))


@dataclass(frozen=True)
class TrainingRun:
    root: str

    BEST_MODELS = "fold-*/best/model.pt"  # what predict looks for

    config = property(lambda self: storage.join(self.root, "config.yaml"))
    segment_config = property(lambda self: storage.join(self.root, SEGMENT_CONFIG))
    ray_results = property(lambda self: storage.join(self.root, "ray_results"))

    def fold(self, k: int) -> Fold:
        return Fold(storage.join(self.root, f"fold-{k}"))


def fold_given_for_run(path: str) -> str | None:
    """What to say when `path` is one fold's directory (RUN/fold-K) given where its run's directory
    is expected, else None."""
    if re.fullmatch(r"fold-\d+", storage.name(path)) and storage.is_dir(path):
        return f"{path} is one fold of a run: give the run directory, {storage.parent(path)}"
    return None


@dataclass(frozen=True)
class Search:
    root: str

    config = property(lambda self: storage.join(self.root, "tune_config.yaml"))
    trials_csv = property(lambda self: storage.join(self.root, "trials.csv"))
    best_config = property(lambda self: storage.join(self.root, "best_config.yaml"))
    hparams = property(lambda self: storage.join(self.root, "tensorboard", "hparams"))
    ray_results = property(lambda self: storage.join(self.root, "ray_results"))
    study_db = property(lambda self: storage.join(self.root, "study.db"))  # the Optuna study (SQLite)

    def trial(self, trial_id: str) -> TrainingRun:
        return TrainingRun(storage.join(self.root, "trials", trial_id))
