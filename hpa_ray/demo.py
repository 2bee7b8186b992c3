"""The whole pipeline on generated data, on an embedded local Ray (`python -m hpa_ray demo`).

synthetic train and test sets → segment the training images → image-level folds → a short
search (Optuna + ASHA) → every fold trained in parallel with the best settings → predict the
test images → validate the submission → score it against the test set's per-cell truth, beside
a prior-only answer → a visual report. DIR/submission.csv, DIR/evaluation.json and
DIR/report/index.html (with the predictions view, predictions.html) are the fixed outputs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from hpa_ray.core.errors import HpaRayError
from hpa_ray.core.locks import LOCK_NAME, owned_by_this_run
from hpa_ray.core.schema import NUM_CLASSES
from hpa_ray.evaluate.score import evaluate, read_truth
from hpa_ray.folds.config import FoldsConfig
from hpa_ray.folds.stratify import read_label_matrix, write_folds
from hpa_ray.predict.config import PredictConfig
from hpa_ray.predict.run import run_predict
from hpa_ray.predict.submission import prediction_string, read_submission, validate_submission, write_submission
from hpa_ray.report.build import run_report
from hpa_ray.runtime import cli, console, session
from hpa_ray.segment.config import SegmentConfig
from hpa_ray.segment.stage import run_segment, summary_line
from hpa_ray.synth.config import SynthConfig
from hpa_ray.synth.generate import generate
from hpa_ray.train.backbones import backbone_names
from hpa_ray.train.config import TrainConfig
from hpa_ray.train.fit import train_folds
from hpa_ray.tune.config import SearchDim, TuneConfig
from hpa_ray.tune.search import run_search


@dataclass(frozen=True)
class DemoSize:
    train_images: int  # synthetic training images
    test_images: int  # synthetic test images (scored against their per-cell truth)
    image_size: int  # side in px
    crop_size: int  # cell crop side
    folds: int  # folds trained in parallel (the ensemble)
    model: str  # TrainConfig.model
    epochs: int  # epochs per fold
    search_trials: int  # Optuna trials over the learning rate, on fold 0
    search_epochs: int  # epochs per search trial (ASHA may stop a trial after one)
    # Learning-rate range searched (log-uniform). A 2-epoch trial favours fast starts: the
    # range stops where a full run gets worse (`small`, development seeds: lr 0.009 scored
    # 0.04 mAP below 0.001–0.003, docs/lab/quality.md).
    search_lr: tuple[float, float] = (1e-3, 4e-3)


SIZES = {
    "full": DemoSize(96, 24, image_size=2048, crop_size=128, folds=3, model="small", epochs=24,
                     search_trials=3, search_epochs=2),
    "quick": DemoSize(8, 3, image_size=1024, crop_size=48, folds=2, model="tiny", epochs=2,
                      search_trials=2, search_epochs=1),
}  # fmt: skip


# A quick run's score says nothing of the model: said where the score is printed.
QUICK_CAVEAT = ("--quick checks that every stage runs: {size.train_images} training images and {size.epochs} epochs "
                "are too few to learn from,\nso this mAP may fall below the prior's (the default demo scores "
                "0.6-0.8 against about 0.11: docs/lab/quality.md)")  # fmt: skip

_START = [time.perf_counter()]


RECORD = "demo.json"  # how the demo in a directory was run; it also marks the directory as a demo's
# What a demo writes into its --out: a run into a directory holding an earlier demo replaces them
# (logs/ is kept: the new run appends to its log). Resuming would mix the earlier run's data,
# cells or models with the new run's settings.
OUTPUTS = ("data", "segment", "folds.csv", "folds_balance.csv", "folds_config.yaml", "runs", "submission.csv",
           "submission.failed.csv", "prior_submission.csv", "evaluation.json", "report", RECORD)  # fmt: skip


class DemoOutError(HpaRayError, ValueError):
    """--out holds something that is not a demo's: the demo would mix with it or delete it."""


def _holds_a_demo(out: Path) -> bool:
    # data/train/synth_config.yaml: a demo from before the record, or one stopped early
    return (out / RECORD).exists() or (out / "data" / "train" / "synth_config.yaml").exists()


def out_problem(out: Path) -> str | None:
    """Why a demo cannot run into `out`, or None: new, empty (but for logs/), or an earlier demo's."""
    others = sorted(p.name for p in out.iterdir() if p.name not in ("logs", LOCK_NAME)) if out.is_dir() else []
    if others and not _holds_a_demo(out):
        return f"holds other files ({', '.join(others[:3])}) and no earlier demo: give a new or empty directory"
    return None


def prepare_out(out: Path) -> bool:
    """Make `out` ready for a demo: an earlier demo's outputs there are removed (→ True).
    DemoOutError when it holds anything else (`out_problem`)."""
    if problem := out_problem(out):
        raise DemoOutError(f"--out {out} {problem}")
    if not _holds_a_demo(out):
        return False
    for name in OUTPUTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    return True


def _step(name: str) -> None:
    print(f"\n== [{time.perf_counter() - _START[0]:4.0f} s] {name}", flush=True)


def _gpu_share(folds: int) -> float:
    """GPUs per fold's worker: on a machine with fewer GPUs than folds the folds share them
    (the demo's small crops leave a GPU mostly idle); 1 where each fold can have its own."""
    session.init_ray()
    gpus = session.cluster_resources().get("GPU", 0)
    return min(1.0, gpus / folds) if gpus else 1.0


def _search(outputs: dict, out: Path, size: DemoSize, base: TrainConfig) -> TrainConfig:
    cfg = TuneConfig(
        num_samples=size.search_trials, seed=base.seed, train=base.model_copy(update={"epochs": size.search_epochs}),
        search_space={"lr": SearchDim(type="loguniform", low=size.search_lr[0], high=size.search_lr[1])},
        asha={"grace_period": 1, "reduction_factor": 2},
    )  # fmt: skip
    outputs["search"] = out / "runs" / "search"
    table = run_search(outputs["train_cells"], outputs["folds"], outputs["search"], cfg)
    print(table[["lr", "epochs_run", "best_val_map"]].to_string(index=False))
    return base.model_copy(update={"lr": float(table.iloc[0].lr)})


def prior_submission(images: pd.DataFrame, labels_csv: Path, path: Path) -> Path:
    """The trivial answer: every predicted cell gets each class's training frequency."""
    _, y = read_label_matrix(labels_csv)
    frequency = y.mean(axis=0)
    strings = []
    for masks in images["masks"]:
        cells = masks.split() if masks else []
        strings.append(prediction_string(cells, np.tile(frequency, (len(cells), 1)), 0.0, NUM_CLASSES))
    return write_submission(images.assign(PredictionString=strings), path)


def _evaluate(outputs: dict, images: pd.DataFrame, out: Path) -> dict:
    truth = read_truth(outputs["test_data"] / "truth.parquet")
    scores = evaluate(read_submission(outputs["submission"]), truth)
    outputs["prior_submission"] = prior_submission(images, outputs["train_data"] / "labels.csv",
                                                   out / "prior_submission.csv")  # fmt: skip
    prior = evaluate(read_submission(outputs["prior_submission"]), truth)
    result = {"mAP": scores["mAP"], "prior_mAP": prior["mAP"], **scores,
              "prior_per_class_ap": prior["per_class_ap"]}  # fmt: skip
    outputs["evaluation"] = out / "evaluation.json"
    outputs["evaluation"].write_text(json.dumps(result, indent=2) + "\n")
    return result


CARD_MODEL = "efficientnet-b2"  # the model the task's card names; it wants a GPU


def default_model(resources: dict[str, float]) -> str:
    """The full demo's classifier for a cluster with `resources` (what it has or can grow to, as
    `use_gpu: auto` decides): the card's EfficientNet-B2 where there are GPUs, else `small`, a
    CNN that learns in minutes on two CPU cores."""
    return CARD_MODEL if resources.get("GPU", 0) > 0 else SIZES["full"].model


def run_demo(out: str | Path, seed: int = 0, quick: bool = False, model: str | None = None) -> dict[str, Path]:
    """Run every stage into `out` (an earlier demo there is replaced: `prepare_out`); returns
    where each output lies."""
    out = Path(out)
    _START[0] = time.perf_counter()
    size = SIZES["quick" if quick else "full"]
    if model:
        size = replace(size, model=model)
    with owned_by_this_run(out):
        if prepare_out(out):
            print(f"{out} held an earlier demo: its outputs are replaced")
        (out / RECORD).write_text(json.dumps({"seed": seed, "quick": quick, "model": model}) + "\n")
        return _run_stages(out, seed, quick, model, size)


def _run_stages(out: Path, seed: int, quick: bool, model: str | None, size: DemoSize) -> dict[str, Path]:
    synth_cfg = SynthConfig(size=size.image_size)
    outputs: dict[str, Path] = {}
    _step(f"synthetic data: {size.train_images} train + {size.test_images} test images, {size.image_size} px")
    outputs["train_data"] = generate(out / "data" / "train", size.train_images, seed, synth_cfg)
    outputs["test_data"] = generate(out / "data" / "test", size.test_images, seed + 1, synth_cfg)
    seg_cfg = SegmentConfig(crop_size=size.crop_size)
    _step(f"segment the training images (backend {seg_cfg.backend})")
    result = run_segment(outputs["train_data"] / "images", out / "segment" / "train", seg_cfg,
                         outputs["train_data"] / "labels.csv")  # fmt: skip
    print(summary_line(result))
    outputs["train_cells"] = out / "segment" / "train" / "cells"
    _step(f"folds: {size.folds}, over images")
    folds_cfg = FoldsConfig(n_folds=size.folds, seed=seed)
    outputs["folds"] = Path(write_folds(outputs["train_data"] / "labels.csv", out / "folds.csv", folds_cfg).output)
    if not model and not quick:
        size = replace(size, model=default_model(session.cluster_resources()))
        if size.model != SIZES["full"].model:
            print(f"model: {size.model}, the card's model, since the cluster has GPUs (--model small: the CPU one)")
    base = TrainConfig(model=size.model, epochs=size.epochs, batch_size=32, cpus_per_worker=0.5,
                       gpus_per_worker=_gpu_share(size.folds), patience=size.epochs, seed=seed)  # fmt: skip
    _step(f"search: {size.search_trials} trials over the learning rate, fold 0, Optuna + ASHA")
    train_cfg = _search(outputs, out, size, base)
    _step(f"train {size.folds} folds in parallel: {size.model}, {size.epochs} epochs, lr {train_cfg.lr:.2g}")
    outputs["models"] = out / "runs" / "demo"
    table = train_folds(outputs["train_cells"], outputs["folds"], list(range(size.folds)), outputs["models"],
                        train_cfg)  # fmt: skip
    print(table[["fold", "epoch", "val_loss", "val_map"]].to_string(index=False))
    _step("predict the test images with the folds' ensemble")
    outputs["submission"] = out / "submission.csv"
    predicted = run_predict(outputs["test_data"] / "images", outputs["models"], outputs["submission"], PredictConfig())
    summary = validate_submission(outputs["submission"], outputs["test_data"] / "images")
    print(f"submission valid: {summary.rows} images, {summary.triples} predictions ({predicted.seconds:.1f} s)")
    _step("evaluate against the test set's per-cell truth")
    scores = _evaluate(outputs, predicted.images, out)
    print(f"mAP {scores['mAP']:.4f} (prior-only answer: {scores['prior_mAP']:.4f})")
    if quick:
        print(QUICK_CAVEAT.format(size=size))
    _step("report: figures, index.html and the predictions view")
    test = outputs["test_data"]
    outputs["report"] = run_report(out / "report", labels=outputs["train_data"] / "labels.csv",
                                   segment_dir=out / "segment" / "train", folds=outputs["folds"],
                                   run_dir=outputs["models"], truth=test / "truth.parquet",
                                   submission=outputs["submission"], images=test / "images")  # fmt: skip
    print(f"report → {outputs['report']}")
    return outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpa_ray demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/demo", help="output directory (default out/demo)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes (about 2 minutes): checks every stage runs, too small to learn"
    )
    parser.add_argument("--model", choices=backbone_names(),
                        help="classifier backbone (default: efficientnet-b2 where the cluster has GPUs, else small, "
                        "a CNN that learns in minutes on 2 CPU cores; --quick: tiny)")  # fmt: skip
    console.add_verbose_flag(parser)
    args = parser.parse_args(argv)
    if problem := cli.output_problem(args.out, "dir") or out_problem(Path(args.out)):
        parser.error(f"--out {args.out} {problem}")
    log_file = console.log_file_for(args.out, "demo")
    console.setup(log_file, args.verbose)
    return cli.guarded(lambda: _demo_cli(args, log_file))


def _demo_cli(args, log_file) -> int:
    start = time.perf_counter()
    outputs = run_demo(args.out, args.seed, args.quick, args.model)
    scores = json.loads(outputs["evaluation"].read_text())
    print(f"\n== demo finished in {time.perf_counter() - start:.0f} s: mAP {scores['mAP']:.4f}, "
          f"prior-only {scores['prior_mAP']:.4f}; outputs:")  # fmt: skip
    for name, path in {**outputs, **({"log": log_file} if console.quiet() else {})}.items():
        print(f"  {name:16s} {path}")
    if "search" in outputs:
        print(f"the search in optuna-dashboard: python -m hpa_ray.tune dashboard {outputs['search']}")
    return 0
