"""Test images → Kaggle submission with a run's fold models (`python -m hpa_ray.predict`).

Ray Data: the segmentation stage's pipeline (same backend and settings as the training cells,
from RUN/segment_config.yaml) → classify every cell with the mean of the fold models' sigmoids,
optionally over flipped crops too (CPU tasks; GPU actors when the cluster has GPUs) → one row per
image → submission.csv, checked by hpa_ray.predict.submission before the run ends. Images, the run and
the submission may be local or object storage (`s3://…`, `gs://…`).
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hpa_ray.core import storage
from hpa_ray.core.config import ConfigError, load_config, with_updates
from hpa_ray.core.images import InputError, list_images, read_id_csv
from hpa_ray.core.layout import Fold, TrainingRun, fold_given_for_run
from hpa_ray.core.locks import owned_by_this_run
from hpa_ray.core.schema import crops_to_numpy
from hpa_ray.predict.config import PredictConfig
from hpa_ray.predict.ensemble import Ensemble, load_model
from hpa_ray.predict.scoring import cell_scores
from hpa_ray.predict.submission import SubmissionError, prediction_string, validate_submission, write_submission
from hpa_ray.runtime import cli, console, session
from hpa_ray.runtime.resources import check_requests, offered_node_types
from hpa_ray.runtime.sink import read_ipc
from hpa_ray.segment.backends import check_backend, wants_gpu
from hpa_ray.segment.config import SegmentConfig
from hpa_ray.segment.stage import (
    EXIT_SOME_FAILED,
    build_dataset,
    infer_in_actors,
    operator_reservation,
    warn_gpu_not_used,
)
from hpa_ray.segment.stage import resource_requests as segment_requests
from hpa_ray.train.config import TrainConfig
from hpa_ray.train.model import ModelError

_ARCHITECTURE = ("model", "image_size", "method", "pooling", "lse_r")  # every fold of an ensemble shares these


@dataclass(frozen=True)
class RunModels:
    paths: tuple[str, ...]  # fold-K/best/model.pt, one per fold
    train: TrainConfig  # architecture and input size of the models
    segment: SegmentConfig  # how the training cells were cut (applied to the test images)


def _fold_config(fold_dir: str, run_cfg: str) -> TrainConfig:
    beside = Fold(fold_dir).config
    path = beside if storage.exists(beside) else run_cfg
    if not storage.exists(path):
        raise ModelError(f"{fold_dir}: no config.yaml beside the model (nor {run_cfg}): cannot rebuild the model")
    return load_config(TrainConfig, path)


def load_run(models_dir: str | Path, cfg: PredictConfig) -> RunModels:
    """Find the fold models of a train run and check that they form one ensemble."""
    models_dir = storage.absolute(models_dir)
    run = TrainingRun(models_dir)
    paths = [e.path for e in storage.list_files(models_dir, run.BEST_MODELS, recursive=True)]
    if not paths:
        if problem := fold_given_for_run(models_dir):
            raise ModelError(f"--run-dir {problem}")
        raise ModelError(f"no models under {models_dir} (expected fold-K/best/model.pt from python -m hpa_ray.train)")
    fold_dirs = {p: storage.parent(storage.parent(p)) for p in paths}
    run_cfg = run.config
    configs = {storage.name(d): _fold_config(d, run_cfg) for d in fold_dirs.values()}
    for key in _ARCHITECTURE:
        values = {fold: getattr(c, key) for fold, c in configs.items()}
        if len(set(values.values())) > 1:
            raise ModelError(f"the models in {models_dir} differ in {key}: {values}; predict with one run's folds")
    seg_path = run.segment_config
    if not storage.exists(seg_path):
        raise ConfigError(f"{seg_path} is missing: cannot tell how the training cells were segmented")
    segment = with_updates(load_config(SegmentConfig, seg_path), cfg.segment, f"{seg_path} + predict segment")
    train = next(iter(configs.values())).model_copy(update={"pretrained": None})
    for path in paths:  # fail here, not in every worker
        load_model(path, train.model_dump_json(), "cpu")
    return RunModels(tuple(paths), train, segment)


def _classify(batch: dict, ensemble: Ensemble, cfg: PredictConfig) -> dict:
    """Segmented rows (one per image, cells as Arrow IPC) → rows with the prediction string."""
    tables = [
        read_ipc(c) if s == "ok" and n else None for c, s, n in zip(batch["cells"], batch["status"], batch["n_cells"])
    ]
    present = [t for t in tables if t is not None]
    scored = iter(ensemble.score_images([crops_to_numpy(t) for t in present], cfg.batch_size))
    strings, masks = [], []
    for table in tables:
        if table is None:
            strings.append("")
            masks.append("")
            continue
        cell, image = next(scored)
        probs = cell_scores(cell, image, table.column("touches_border").to_numpy(zero_copy_only=False),
                            table.column("area").to_numpy(), cfg)  # fmt: skip
        cell_masks = table.column("mask_rle").to_pylist()
        strings.append(prediction_string(cell_masks, probs, cfg.min_confidence, cfg.top_k))
        masks.append(" ".join(cell_masks))
    keep = ("image_id", "status", "error", "n_cells", "image_height", "image_width", "seconds", "device",
            "working_scale")  # fmt: skip
    return {
        **{k: batch[k] for k in keep},
        "classify_device": np.array([ensemble.device.type] * len(tables), object),
        "prediction_string": np.array(strings, object),
        "masks": np.array(masks, object),
    }


@functools.lru_cache(maxsize=2)
def _worker_ensemble(run_json: str, tta: bool) -> Ensemble:
    return Ensemble(run_json, tta, "cpu")


def _classify_in_task(batch: dict, run_json: str, cfg_json: str) -> dict:
    cfg = PredictConfig.model_validate_json(cfg_json)
    return _classify(batch, _worker_ensemble(run_json, cfg.tta), cfg)


class _ClassifyActor:
    """Holds the ensemble on a GPU for the life of the actor."""

    def __init__(self, run_json: str, cfg_json: str):
        import torch

        self.cfg = PredictConfig.model_validate_json(cfg_json)
        self.ensemble = Ensemble(run_json, self.cfg.tta, "cuda" if torch.cuda.is_available() else "cpu")

    def __call__(self, batch: dict) -> dict:
        return _classify(batch, self.ensemble, self.cfg)


def _share_gpus(segment: SegmentConfig, cfg: PredictConfig) -> SegmentConfig:
    """GPU segmentation actors beside GPU classifier actors: each segmentation actor takes what
    a classifier leaves of a GPU (a whole GPU each would leave one-GPU machines waiting forever)."""
    if not (wants_gpu(segment) and session.use_gpu(cfg.use_gpu)):
        return segment
    share = min(segment.actor_num_gpus, max(0.01, 1.0 - cfg.actor_num_gpus))
    return segment.model_copy(update={"actor_num_gpus": share})


def build_predict_dataset(jobs: list[dict], run: RunModels, cfg: PredictConfig):
    """Segmentation pipeline (hpa_ray.segment.stage.build_dataset) + classification, lazily."""
    import ray

    run_json = json.dumps({"paths": list(run.paths), "train": run.train.model_dump(mode="json")})
    ds = build_dataset(jobs, _share_gpus(run.segment, cfg))
    if not session.use_gpu(cfg.use_gpu):
        # Fuses with the segmentation tasks (crops never leave the worker), a block at a time:
        # a batch size would coalesce blocks into fewer, longer tasks (measured: 4 images in one).
        return ds.map_batches(_classify_in_task, fn_kwargs={"run_json": run_json, "cfg_json": cfg.model_dump_json()},
                              batch_size=None, num_cpus=run.segment.task_num_cpus)  # fmt: skip
    actors = int(session.cluster_resources().get("GPU", 1)) if cfg.actors == "auto" else cfg.actors
    return ds.map_batches(
        _ClassifyActor,
        fn_constructor_kwargs={"run_json": run_json, "cfg_json": cfg.model_dump_json()},
        batch_size=cfg.images_per_batch,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, actors)),
        num_cpus=cfg.actor_num_cpus,
        num_gpus=cfg.actor_num_gpus,
    )


def resource_requests(run: RunModels, cfg: PredictConfig) -> dict[str, dict[str, float]]:
    """What each unit of prediction work asks of a node (all from the configs): segmentation's
    own, and the classifier actors' when they run on GPUs."""
    segment = _share_gpus(run.segment, cfg)
    requests = segment_requests(segment, wants_gpu(segment))
    if session.use_gpu(cfg.use_gpu):
        requests.update(classifier_request(cfg))
    return requests


def classifier_request(cfg: PredictConfig) -> dict[str, dict[str, float]]:
    """What each GPU classifier actor asks of a node."""
    return {"classifier actor": {"CPU": cfg.actor_num_cpus, "GPU": cfg.actor_num_gpus}}


@dataclass
class PredictResult:
    images: pd.DataFrame  # per image: ID, ImageWidth, ImageHeight, PredictionString, status, error, n_cells, masks
    output: str  # the submission written (a local path or a URI)
    seconds: float  # wall time

    @property
    def failed(self) -> pd.DataFrame:
        return self.images[self.images.status != "ok"]


def _read_ids(path: str | Path) -> pd.DataFrame:
    ids = read_id_csv(path, "IDs", ("ID",))
    doubled = ids.ID[ids.ID.duplicated()]
    if len(doubled):
        raise InputError(f"IDs file {path}: ID {doubled.iloc[0]!r} is listed more than once")
    empty = ids.index[ids.ID == ""]
    if len(empty):
        raise InputError(f"IDs file {path}: line {empty[0] + 2} has an empty ID")
    return ids


def _keep_listed(listing, ids: pd.DataFrame, ids_csv, images_dir) -> None:
    """Only the IDs file's images are run; InputError when none of them is in the directory (the
    wrong directory, or the wrong IDs file: a submission of empty rows would be no use)."""
    found = [e["image_id"] for e in listing.jobs + listing.refused]
    wanted = set(ids.ID)
    listing.jobs = [j for j in listing.jobs if j["image_id"] in wanted]
    listing.refused = [r for r in listing.refused if r["image_id"] in wanted]
    if not listing.jobs and not listing.refused:
        raise InputError(f"none of the {len(ids)} IDs in {ids_csv} has image files in {images_dir}, which holds "
                         f"{len(found)} other image(s) (e.g. {', '.join(sorted(found)[:2])})")  # fmt: skip


def _rows(listing, results: pd.DataFrame, ids: pd.DataFrame | None, images_dir) -> pd.DataFrame:
    """One row per image in submission order: the listed IDs, or the images found. A failed or
    missing image keeps an empty prediction and takes its size from the IDs file if it has one."""
    failed = pd.DataFrame(listing.refused, columns=["image_id", "error"]).assign(status="error", n_cells=0)
    rows = pd.concat([results, failed], ignore_index=True).drop_duplicates("image_id").set_index("image_id")
    order = list(ids.ID) if ids is not None else sorted(rows.index)
    rows = rows.reindex(order)
    missing = rows.status.isna()
    rows.loc[missing, ["status", "error"]] = ["error", f"no image files for this ID in {images_dir}"]
    rows["n_cells"] = rows.n_cells.fillna(0).astype(int)
    for col, fallback in (("image_width", "ImageWidth"), ("image_height", "ImageHeight")):
        known = ids.set_index("ID")[fallback].reindex(order) if ids is not None and fallback in ids else None
        values = rows[col].where(rows[col].fillna(0) > 0, known.to_numpy() if known is not None else 0)
        rows[col] = pd.to_numeric(values, errors="coerce").fillna(0).astype(int)
    rows = rows.fillna({"prediction_string": "", "masks": "", "error": ""}).reset_index(names="image_id")
    return rows.rename(columns={"image_id": "ID", "image_width": "ImageWidth", "image_height": "ImageHeight",
                                "prediction_string": "PredictionString"})  # fmt: skip


def _collect(dataset, total: int, columns) -> pd.DataFrame:
    """The dataset's rows (one per image) as they come, with a progress line every 10 s."""
    frames: list[pd.DataFrame] = []
    with console.Progress("predict", total, lambda: sum(len(f) for f in frames)):
        for batch in dataset.iter_batches(batch_format="pandas", batch_size=None):
            frames.append(batch)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def run_predict(images_dir, models_dir, output, cfg: PredictConfig, ids_csv=None) -> PredictResult:
    """Segment and classify every image under images_dir; write and check the submission."""
    with owned_by_this_run(output, is_file=True):
        return _predict(images_dir, models_dir, output, cfg, ids_csv)


def _predict(images_dir, models_dir, output, cfg: PredictConfig, ids_csv) -> PredictResult:
    start = time.perf_counter()
    run = load_run(models_dir, cfg)
    ids = _read_ids(ids_csv) if ids_csv else None
    listing = list_images(images_dir)
    if ids is not None:
        _keep_listed(listing, ids, ids_csv, images_dir)
    results = pd.DataFrame(columns=["image_id", "status", "error", "n_cells", "image_height", "image_width",
                                    "prediction_string", "masks"])  # fmt: skip
    if listing.jobs:
        check_backend(run.segment)
        session.init_ray()
        check_requests("predict", resource_requests(run, cfg), offered_node_types())
        session.prewarm_workers(("ray.data", "hpa_ray.predict.run"))
        with operator_reservation(enabled=infer_in_actors(run.segment) or session.use_gpu(cfg.use_gpu)):
            results = _collect(build_predict_dataset(listing.jobs, run, cfg), len(listing.jobs), results.columns)
    _warn_gpus_not_used(results, run, cfg)
    rows = _rows(listing, results, ids, images_dir)
    # Written under a name of its own, checked, then renamed: `output` is never an invalid file.
    partial = f"{output}.partial-{os.getpid()}"
    write_submission(rows, partial)
    try:
        validate_submission(partial)
    except SubmissionError:
        storage.delete_file(partial)
        raise
    storage.move_file(partial, output)
    _write_failures(rows, output)
    return PredictResult(rows, str(output), time.perf_counter() - start)


def _warn_gpus_not_used(results: pd.DataFrame, run: RunModels, cfg: PredictConfig) -> None:
    ran = results[results.status == "ok"]
    if len(ran) and wants_gpu(run.segment) and "device" in ran:
        warn_gpu_not_used(ran.device, "segmentation actors")
    if len(ran) and session.use_gpu(cfg.use_gpu) and "classify_device" in ran:
        warn_gpu_not_used(ran.classify_device, "classifier actors")


def failures_path(output) -> str:
    """Where predict lists the images it could not predict (ID, error): NAME.failed.csv beside
    the submission NAME.csv."""
    output = str(output)  # the submission's own spelling: local, file:// or a URI
    return (output[: -len(".csv")] if output.lower().endswith(".csv") else output) + ".failed.csv"


def _write_failures(rows: pd.DataFrame, output) -> None:
    """The failed images' IDs and errors beside the submission, or no such file when none failed
    (an earlier run's list would mislead)."""
    failed = rows.loc[rows.status != "ok", ["ID", "error"]]
    if len(failed):
        storage.write_text(failures_path(output), failed.to_csv(index=False))
    else:
        storage.delete_file(failures_path(output))


def main(argv: list[str] | None = None) -> int:
    parser = cli.StageParser("hpa_ray.predict", __doc__,
                             epilog=f"Exit status: 0 every image predicted, {EXIT_SOME_FAILED} some failed (listed; "
                             "their rows are empty), 2 unusable inputs, models or config.")  # fmt: skip
    parser.flag("--images", required=True)
    parser.flag("--run-dir", required=True, old=("--models",))
    parser.out("file", "the submission CSV to write", old=("--output",))
    parser.add_argument("--ids", help="CSV with an ID column (e.g. sample_submission.csv): a row for each, in order")
    parser.config("conf/predict.yaml", "top_k=3 segment.hpa.cell_model=PATH")
    args = parser.parse(argv)
    console.setup(console.log_file_for(storage.parent(storage.absolute(args.out)), "predict"), args.verbose)
    return cli.guarded(lambda: _predict_cli(args))


def _predict_cli(args) -> int:
    cfg = load_config(PredictConfig, args.config, args.overrides)
    result = run_predict(args.images, args.run_dir, args.out, cfg, args.ids)
    console.print_failures([(row.ID, row.error) for row in result.failed.itertuples()], failures_path(result.output))
    images = result.images
    console.print_cell_less(list(images.ID[(images.status == "ok") & (images.n_cells == 0)]))
    n = len(images)
    print(f"predict: {n} images ({len(result.failed)} failed), {int(images.n_cells.sum())} cells, "
          f"{result.seconds:.1f} s ({n / result.seconds:.2f} images/s) → {result.output} (validated)")  # fmt: skip
    return EXIT_SOME_FAILED if len(result.failed) else 0
