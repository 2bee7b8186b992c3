"""Per-fold training on Ray Train (`python -m hpa_ray.train`); all folds at once via Ray Tune.

Each fold is a Ray Train TorchTrainer whose workers (`hpa_ray.train.worker`) stream augmented
uint8 batches from Ray Data, train with BCE + Adam + cosine annealing, validate each epoch,
checkpoint, and stop early. A worker that dies is restarted and resumes from the last checkpoint.
`--fold all` runs one Ray Tune trial per fold, in parallel.
Outputs: RUN_DIR/fold-K/{best/model.pt, config.yaml, metrics.csv, tensorboard/}, RUN_DIR/config.yaml,
RUN_DIR/segment_config.yaml (copied from the cells: predict segments test images the same way).
Cells, folds and RUN_DIR may be local or object storage (`s3://…`); so may Ray's storage_path.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from hpa_ray.core import storage
from hpa_ray.core.config import ConfigError, load_config, write_resolved
from hpa_ray.core.layout import Fold, SegmentOutput, TrainingRun
from hpa_ray.core.locks import owned_by_this_run
from hpa_ray.runtime import cli, console, session
from hpa_ray.train.config import TrainConfig
from hpa_ray.train.data import (
    check_cells,
    check_fold,
    check_segment_config,
    crops_bytes,
    fold_datasets,
    read_folds,
)
from hpa_ray.train.worker import STATE, EpochHook, train_loop_per_worker

# Ray Train's checkpoint manager keeps the epoch with the best val_map (on a tie, the later one)
# and, always, the latest one, which a restarted worker group resumes from (two checkpoints on
# disk while the latest epoch is not the best).
CHECKPOINTS = {"num_to_keep": 1, "checkpoint_score_attribute": "val_map", "checkpoint_score_order": "max"}


def fit_fold(cells_dir: str | Path, folds_csv: str | Path, fold: int, run_dir: str | Path, cfg: TrainConfig,
             callbacks: tuple = (), epoch_hooks: tuple[EpochHook, ...] = ()) -> dict:  # fmt: skip
    """Train one fold with Ray Train; returns the best epoch's metrics. See the module docstring.

    callbacks: Ray Tune callbacks of the run. epoch_hooks: picklable `hook(epoch, fold_dir)`
    called in the rank-0 worker as each epoch starts (the tests inject a worker's death so).
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from hpa_ray.train.model import check_model_config

    check_model_config(cfg)
    check_cells(storage.absolute(cells_dir))
    check_segment_config(storage.absolute(cells_dir))
    folds = read_folds(folds_csv)  # a wrong folds file or fold is said before Ray starts (seconds)
    check_fold(folds, fold)
    session.init_ray()
    run_dir, cells_dir = storage.absolute(run_dir), storage.absolute(cells_dir)
    fold_dir = TrainingRun(run_dir).fold(fold).root
    # Same run name and storage path: Ray Train resumes a run that was interrupted (its
    # metrics.jsonl keeps the earlier epochs; export keeps the last report of each epoch).
    storage.makedirs(fold_dir)
    _write_run_config(fold_dir, cfg, cells_dir)
    train_ds, val_ds = fold_datasets(cells_dir, folds, fold, cache=caches_crops(cfg, cells_dir),
                                     bags=cfg.method == "bag", seed=cfg.seed)  # fmt: skip
    gpu = session.use_gpu(cfg.use_gpu)
    resources = worker_resources(cfg, gpu)
    check_resources(cfg)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "train": cfg.model_dump(),
            "fold": fold,
            "fold_dir": fold_dir,
            "epoch_hooks": list(epoch_hooks),
            "gpu": gpu,
        },
        # NCCL only where several GPU workers exchange gradients: one worker needs no collective,
        # and gloo also runs where the GPU is logical (a local cluster) or torch is a CPU build.
        torch_config=TorchConfig(backend="nccl" if gpu and cfg.num_workers > 1 else "gloo"),
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=f"{storage.name(run_dir)}-fold-{fold}",
            storage_path=cfg.storage_path or TrainingRun(run_dir).ray_results,
            checkpoint_config=CheckpointConfig(**CHECKPOINTS),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            callbacks=list(callbacks),
        ),
        datasets={"train": train_ds, "val": val_ds},
    )
    result = trainer.fit()
    return _export_fold(result, fold_dir)


def worker_resources(cfg: TrainConfig, gpu: bool) -> dict[str, float]:
    """What each Ray Train worker of a fold asks for (the config's, nothing in code)."""
    return {"CPU": cfg.cpus_per_worker, **({"GPU": cfg.gpus_per_worker} if gpu else {})}


def check_resources(cfg: TrainConfig) -> None:
    """Refuse (ResourceError, exit 2) a worker no node of the connected cluster can hold: Ray
    Train would wait for it forever."""
    from hpa_ray.runtime.resources import check_requests, offered_node_types

    check_requests("train", {"training worker": worker_resources(cfg, session.use_gpu(cfg.use_gpu))},
                   offered_node_types())  # fmt: skip


def _export_fold(result, fold_dir: str) -> dict:
    """The best checkpoint's weights → fold_dir/best/model.pt, its epoch's metrics →
    best/metrics.json; per-epoch metrics (restarts deduplicated) → metrics.csv."""
    import io

    import torch

    if not result.best_checkpoints:
        raise RuntimeError(f"training of {storage.name(fold_dir)} reported no checkpoint: {result.error}")
    checkpoint, chosen = result.best_checkpoints[-1]  # Ray's best comes last (with num_to_keep=1, alone)
    with checkpoint.as_directory() as d:
        weights = torch.load(Path(d) / STATE, map_location="cpu", weights_only=False)["model"]
    buffer = io.BytesIO()
    torch.save(weights, buffer)
    storage.write_bytes(Fold(fold_dir).best_model, buffer.getvalue())
    rows = [json.loads(line) for line in storage.read_text(Fold(fold_dir).metrics_jsonl).splitlines()]
    metrics = pd.DataFrame(rows).drop_duplicates("epoch", keep="last").sort_values("epoch")
    storage.write_text(Fold(fold_dir).metrics_csv, metrics.to_csv(index=False))
    row = metrics[metrics.epoch == chosen["epoch"]]
    if row.empty:
        raise RuntimeError(f"{Fold(fold_dir).metrics_jsonl} has no line for epoch {chosen['epoch']}, "
                           "the best checkpoint's: was the file replaced during the run?")  # fmt: skip
    best = row.iloc[0].to_dict()
    storage.write_text(Fold(fold_dir).best_metrics, json.dumps(best, indent=2))
    return best


def caches_crops(cfg: TrainConfig, cells_dir: str) -> bool:
    """Cache when asked, or (auto) when every crop fits in a quarter of the object store: then
    the per-epoch listing and reading of the Parquet (seconds per epoch) happens once."""
    if cfg.cache_data != "auto":
        return bool(cfg.cache_data)
    return crops_bytes(cells_dir) <= session.cluster_resources().get("object_store_memory", 0) / 4


def settle_cache(cfg: TrainConfig, cells_dir: str) -> TrainConfig:
    """cfg with `cache_data: auto` decided once, here: trainings started later (Tune trials)
    must not decide otherwise than the concurrency was chosen for (`concurrent_trials`)."""
    return cfg.model_copy(update={"cache_data": caches_crops(cfg, storage.absolute(cells_dir))})


def concurrent_trials(cfg: TrainConfig, n_folds: int, cached: bool) -> int:
    """Trainings (folds, or search trials) that fit at once, at most n_folds, with one CPU
    kept for Ray Data's tasks: while crops stream from Parquet (`cached` false), every epoch's
    reads need it (without it the workers hold every CPU and the data never arrives: a silent
    hang). Cached crops need tasks only while a training loads them, before its workers start;
    while one loads, the others hold at most (fit - 1) workers' CPUs, so the kept CPU is free
    for it, and the last one to start may take that CPU too (where its workers fit in it).
    `cached` must be what the trainings will do: see `settle_cache`."""
    resources = session.cluster_resources()
    cpus, per_fold_cpu = resources.get("CPU", 1), cfg.num_workers * cfg.cpus_per_worker
    fit = int((cpus - 1) // per_fold_cpu)
    if cached:  # one more only where its workers fit beside the others'
        fit = min(fit + 1, int(cpus // per_fold_cpu))
    if session.use_gpu(cfg.use_gpu):
        fit = min(fit, int(resources.get("GPU", 0) // (cfg.num_workers * cfg.gpus_per_worker)))
    return max(1, min(n_folds, fit))


def _fold_trial(config: dict) -> None:
    """One Ray Tune trial = one fold's TorchTrainer, reporting to Tune (function trainable:
    Ray Train V2 refuses a Trainer passed to Tuner directly)."""
    from ray.tune.integration.ray_train import TuneReportCallback

    cfg = TrainConfig.model_validate(config["train"])
    fit_fold(config["cells"], config["folds"], config["fold"], config["run_dir"], cfg, (TuneReportCallback(),))


def train_folds(cells_dir, folds_csv, folds: list[int], run_dir, cfg: TrainConfig) -> pd.DataFrame:
    """All `folds` in parallel, one Ray Tune trial each; returns each fold's best metrics."""

    check_cells(storage.absolute(cells_dir))
    run_dir = storage.absolute(run_dir)
    _check_folds_resumable(run_dir, folds, cfg)
    session.init_ray()
    with owned_by_this_run(run_dir):
        return _tune_folds(cells_dir, folds_csv, folds, run_dir, cfg)


def _tune_folds(cells_dir, folds_csv, folds: list[int], run_dir: str, cfg: TrainConfig) -> pd.DataFrame:
    from ray import tune

    check_resources(cfg)
    cfg = settle_cache(cfg, cells_dir)
    param_space = {"fold": tune.grid_search(folds), "train": cfg.model_dump(), "cells": storage.absolute(cells_dir),
                   "folds": storage.absolute(folds_csv), "run_dir": run_dir}  # fmt: skip
    # The trial's driver holds no CPU (its workers do): on a small machine a 1-CPU driver per
    # trial leaves the workers waiting forever; {"CPU": 0} alone is refused by Tune.
    trainable = tune.with_resources(_fold_trial, {"CPU": 0, "memory": 1})
    at_once = concurrent_trials(cfg, len(folds), cached=cfg.cache_data)
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(max_concurrent_trials=at_once),
        run_config=tune.RunConfig(
            name=f"{storage.name(run_dir)}-folds",
            storage_path=cfg.storage_path or TrainingRun(run_dir).ray_results,
            verbose=console.tune_verbosity(),
            callbacks=[*console.tune_callbacks("fold", cfg.epochs), session.tensorboard_scalars()],
        ),
    )
    grid = tuner.fit()
    errors = [r.error for r in grid if r.error]
    if errors:
        raise RuntimeError(f"{len(errors)} fold(s) failed: {errors[0]}")
    run = TrainingRun(run_dir)
    rows = [json.loads(storage.read_text(run.fold(k).best_metrics)) | {"fold": k} for k in folds]
    return pd.DataFrame(rows)


def check_resumable(directory: str, cfg: TrainConfig) -> None:
    """ConfigError when the run or fold `directory` was started with another config (its
    config.yaml): resuming it would mix the two."""
    path = storage.join(directory, "config.yaml")
    # cache_data is left out: "auto" is recorded as decided, and it only changes where each
    # epoch reads the crops from.
    if storage.exists(path) and load_config(TrainConfig, path).model_copy(update={"cache_data": cfg.cache_data}) != cfg:
        raise ConfigError(f"{directory} was trained with another config ({path}); "
                          "rerun with that config to resume it, or give a new --out")  # fmt: skip


def _check_folds_resumable(run_dir: str, folds: list[int], cfg: TrainConfig) -> None:
    """Every fold of `folds` already in `run_dir` was started with `cfg`: said before Ray starts,
    not as a traceback from inside each fold's trial."""
    for k in folds:
        check_resumable(TrainingRun(run_dir).fold(k).root, cfg)


def _write_run_config(fold_dir: str, cfg: TrainConfig, cells_dir: str) -> None:
    """fold_dir/config.yaml (how to rebuild the model) and, once per run, a copy of the cells'
    segment_config.yaml (predict segments test images the way the training cells were made).
    A fold that was started with another config is refused: resuming it would mix the two."""
    check_resumable(fold_dir, cfg)
    write_resolved(cfg, Fold(fold_dir).config)
    storage.copy_file(SegmentOutput.of_cells(cells_dir).config, TrainingRun(storage.parent(fold_dir)).segment_config)


def main(argv: list[str] | None = None) -> int:
    parser = cli.StageParser("hpa_ray.train", __doc__, epilog="Exit status: 0 trained, 2 unusable inputs or config.")
    parser.flag("--cells", required=True)
    parser.flag("--folds", required=True)
    parser.add_argument("--fold", default="all", help="a fold number, or all (parallel, via Ray Tune)")
    parser.out("dir", "the run directory: fold-K/, config.yaml (local or URI)", old=("--run-dir",))
    parser.config("conf/train.yaml", "epochs=5")
    args = parser.parse(argv)
    console.setup(console.log_file_for(args.out, "train"), args.verbose)
    return cli.guarded(lambda: _train_cli(args), also=(ValueError,))


def _train_cli(args) -> int:
    cfg = load_config(TrainConfig, args.config, args.overrides)
    folds = sorted(set(read_folds(args.folds).fold)) if args.fold == "all" else [int(args.fold)]
    run_dir = args.out
    storage.makedirs(run_dir)
    with owned_by_this_run(run_dir):
        check_resumable(run_dir, cfg)  # before Ray starts, and before the run's config.yaml is written
        _check_folds_resumable(run_dir, folds, cfg)
        write_resolved(cfg, TrainingRun(run_dir).config)
        if len(folds) == 1:
            metrics = TrainingRun(run_dir).fold(folds[0]).metrics_jsonl
            epochs = f"{cfg.epochs} epoch" + ("s" if cfg.epochs != 1 else "")
            print(f"train fold {folds[0]}: {epochs} of {cfg.model}; per-epoch metrics → {metrics}")
            table = pd.DataFrame([fit_fold(args.cells, args.folds, folds[0], run_dir, cfg) | {"fold": folds[0]}])
        else:
            table = train_folds(args.cells, args.folds, folds, run_dir, cfg)
    print(table[["fold", "epoch", "train_loss", "val_loss", "val_map"]].to_string(index=False))
    print(f"train: {len(folds)} fold(s), mean best val_map {table.val_map.mean():.4f} → {run_dir}")
    return 0
