"""Folds → Ray Train → Ray Tune over folds, on CPU with synthetic cells, through the real code.

The cells: tests/stages/conftest.py's `cells`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from hpa_ray.core.schema import NUM_CLASSES
from hpa_ray.train.bags import collate_bags
from hpa_ray.train.config import TrainConfig
from hpa_ray.train.data import (
    IN_PROCESS_MAX_BYTES,
    CellCollate,
    DataError,
    crops_bytes,
    crops_to_numpy,
    fold_datasets,
    images_spread_over_parts,
)
from hpa_ray.train.fit import fit_fold, main, train_folds
from hpa_ray.train.model import build_model
from tests.helpers import KillWorkerOnce, process_group, run_group

FAST = dict(model="tiny", batch_size=32, lr=3e-3, cpus_per_worker=0.5, patience=10)


def _chance_map(cells, fold: int) -> float:
    """Macro AP of an uninformed scorer on the fold's cells: each class's prevalence."""
    table = pq.read_table(cells["cells"], columns=["image_id", "labels"]).to_pandas()
    table = table.merge(pd.read_csv(cells["folds"]), on="image_id")
    labels = np.stack(table[table.fold == fold].labels.values)
    prevalence = labels.mean(0)
    return float(prevalence[(prevalence > 0) & (prevalence < 1)].mean())


def test_one_fold_learns_and_writes_its_outputs(cells, tmp_path):
    cfg = TrainConfig(**FAST, epochs=6)
    best = fit_fold(cells["cells"], cells["folds"], 0, tmp_path / "run", cfg)
    fold_dir = tmp_path / "run" / "fold-0"
    metrics = pd.read_csv(fold_dir / "metrics.csv")
    assert list(metrics.epoch) == list(range(6))
    assert metrics.train_loss.iloc[-1] < 0.8 * metrics.train_loss.iloc[0], "the loss falls"
    assert best["val_map"] >= 1.3 * _chance_map(cells, 0), "validation AP rises above chance"
    assert {f"ap_{c}" for c in range(19)} <= set(metrics.columns)
    # Where each epoch's time went: parts of the epoch, never more than it.
    parts = metrics[["first_batch_s", "first_step_s", "input_wait_s"]]
    assert (parts >= 0).all().all() and (metrics.first_batch_s <= metrics.input_wait_s).all()
    assert (metrics.input_wait_s + metrics.first_step_s <= metrics.train_pass_s + 1e-6).all()
    state = torch.load(fold_dir / "best" / "model.pt", weights_only=True)
    model = build_model(cfg)
    model.load_state_dict(state)
    assert any(p.name.startswith("events.out.tfevents") for p in (fold_dir / "tensorboard").iterdir())
    # Ray Train's checkpoint manager kept the best epoch (the last of a tie) and the latest; the
    # exported weights and metrics are the best one's.
    kept = {}
    for path in (tmp_path / "run" / "ray_results").glob("*/checkpoint_*/state.pt"):
        saved = torch.load(path, map_location="cpu", weights_only=False)
        kept[saved["progress"]["epoch"]] = saved["model"]
    best_epoch = int(metrics.epoch[metrics.val_map == metrics.val_map.max()].iloc[-1])
    assert set(kept) == {best_epoch, 5} and best["epoch"] == best_epoch
    assert best["val_map"] == pytest.approx(metrics.val_map.max())
    assert all(torch.equal(state[k], kept[best_epoch][k]) for k in state)


def test_killed_worker_resumes_from_checkpoint(cells, tmp_path):
    cfg = TrainConfig(**FAST, epochs=4)
    fit_fold(cells["cells"], cells["folds"], 1, tmp_path / "run", cfg, epoch_hooks=(KillWorkerOnce(2),))
    fold_dir = tmp_path / "run" / "fold-1"
    assert (fold_dir / "injected_failure").exists(), "the failure was injected"
    reports = [json.loads(line) for line in (fold_dir / "metrics.jsonl").read_text().splitlines()]
    restarted = [r for r in reports if r["resumed_from_epoch"] >= 0]
    assert restarted, "training went on after the worker died"
    first = restarted[0]
    assert first["epoch"] == first["resumed_from_epoch"] + 1 >= 1, "resumed from a checkpoint, not epoch 0"
    assert list(pd.read_csv(fold_dir / "metrics.csv").epoch) == [0, 1, 2, 3]


def test_a_restarted_worker_resumes_from_the_latest_checkpoint_and_the_best_is_kept(ray_local, tmp_path):
    """fit_fold's checkpoint config on Ray Train itself: epoch 0 scores best, the worker dies after
    epoch 2; it must go on from epoch 2 (not the best, epoch 0), and epoch 0 stays the best."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from hpa_ray.train.fit import CHECKPOINTS
    from tests.helpers import FALLING_VAL_MAP, falling_score_loop

    trainer = TorchTrainer(falling_score_loop, torch_config=TorchConfig(backend="gloo"),
                           scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 0.5}),
                           run_config=RunConfig(name="falling", storage_path=str(tmp_path),
                                                checkpoint_config=CheckpointConfig(**CHECKPOINTS),
                                                failure_config=FailureConfig(max_failures=1)))  # fmt: skip
    result, last = trainer.fit(), len(FALLING_VAL_MAP) - 1
    assert result.metrics["epoch"] == last and result.metrics["resumed_from_epoch"] == last - 1
    assert result.best_checkpoints[-1][1]["epoch"] == 0, "the best-scoring epoch is Ray's best"
    kept = {json.loads(path.read_text())["epoch"] for path in (tmp_path / "falling").glob("checkpoint_*/epoch.json")}
    assert kept == {0, last}, "the best and the latest, no other"


def test_a_bag_fold_learns_reports_both_levels_and_resumes_after_a_killed_worker(cells, tmp_path):
    cfg = TrainConfig(**FAST, epochs=5, method="bag", bag_size=4, cell_loss_weight=1.0)
    best = fit_fold(cells["cells"], cells["folds"], 0, tmp_path / "run", cfg, epoch_hooks=(KillWorkerOnce(2),))
    fold_dir = tmp_path / "run" / "fold-0"
    metrics = pd.read_csv(fold_dir / "metrics.csv")
    assert list(metrics.epoch) == list(range(5)) and (fold_dir / "injected_failure").exists()
    reports = [json.loads(line) for line in (fold_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(r["resumed_from_epoch"] >= 0 for r in reports), "resumed from a checkpoint, not from scratch"
    assert {"val_cell_map", "val_image_map"} <= set(metrics.columns)
    assert np.allclose(metrics.val_map, metrics.val_image_map), "a bag model is selected on image AP"
    assert metrics.train_loss.iloc[-1] < metrics.train_loss.iloc[0], "the loss falls"
    assert best["val_image_map"] > 0 and best["val_cell_map"] > 0
    model = build_model(cfg)
    model.load_state_dict(torch.load(fold_dir / "best" / "model.pt", weights_only=True))
    assert model.pooling == "attention"


def test_a_wrong_folds_file_or_fold_is_said_before_ray_starts(cells, tmp_path, monkeypatch):
    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started before the folds were checked")

    monkeypatch.setattr("hpa_ray.runtime.session.init_ray", no_ray)
    with pytest.raises(DataError, match="fold 7 is not in the folds file"):
        fit_fold(cells["cells"], cells["folds"], 7, tmp_path / "run", TrainConfig(**FAST))
    with pytest.raises(DataError, match="does not exist"):
        fit_fold(cells["cells"], tmp_path / "nope.csv", 0, tmp_path / "run", TrainConfig(**FAST))


@pytest.mark.slow
def test_all_folds_in_parallel_through_tune_and_cli_errors(cells, tmp_path, capsys):
    cfg = TrainConfig(**FAST, epochs=2)
    table = train_folds(cells["cells"], cells["folds"], [0, 1, 2], tmp_path / "run", cfg)
    assert sorted(table.fold) == [0, 1, 2]
    for k in range(3):
        assert (tmp_path / "run" / f"fold-{k}" / "best" / "model.pt").exists()
    args = ["--cells", str(cells["cells"]), "--folds", str(cells["folds"]), "--out", str(tmp_path / "x")]
    assert main([*args, "--fold", "7", "model=tiny"]) == 2
    assert "fold 7 is not in the folds file" in capsys.readouterr().err
    assert main([*args, "--fold", "0", "pretrained=/nope.pth"]) == 2
    assert main([*args, "--fold", "0", "epochz=3"]) == 2
    assert "unknown key 'epochz'" in capsys.readouterr().err


def test_cached_fold_data_is_the_same_cells_and_augments_anew_each_epoch(cells, tmp_path):
    folds = pd.read_csv(cells["folds"])
    # An interrupted write's leftover beside the parts (a copy of one): no reader takes it.
    cells_dir = shutil.copytree(cells["cells"], tmp_path / "cells")
    shutil.copy(next(cells_dir.glob("*.parquet")), cells_dir / "part-x.parquet.123-ab.tmp")

    def passes(cache: bool, augment: bool, n: int = 2, in_process_max_bytes=IN_PROCESS_MAX_BYTES) -> list[np.ndarray]:
        train, _ = fold_datasets(str(cells_dir), folds, 0, cache=cache, in_process_max_bytes=in_process_max_bytes)
        collate = CellCollate(None, augment)  # what the training worker's batches go through
        return [np.concatenate([b["crop"].numpy() for b in train.iter_torch_batches(batch_size=64, collate_fn=collate)])
                for _ in range(n)]  # fmt: skip

    def by_content(crops: np.ndarray) -> np.ndarray:
        return crops[np.argsort([hash(c.tobytes()) for c in crops])]

    # Cached: read by this process (this fixture's cells are few) or by Ray Data tasks.
    assert crops_bytes(str(cells_dir)) <= IN_PROCESS_MAX_BYTES
    plain, cached = passes(False, False, 1)[0], passes(True, False, 1)[0]
    by_ray_data = passes(True, False, 1, in_process_max_bytes=0)[0]
    assert len(plain) == len(cached) > 0 and np.array_equal(by_content(plain), by_content(cached))
    assert np.array_equal(by_content(plain), by_content(by_ray_data))
    first, second = passes(True, True)
    assert first.shape == second.shape and not np.array_equal(by_content(first), by_content(second))


def _spread_one_image(cells_dir: Path, out: Path) -> str:
    """Copy cells_dir to `out`, moving half the cells of an image with several into a Parquet
    part of their own (a directory not written by `segment`) → that image's id."""
    out = shutil.copytree(cells_dir, out)
    for part in sorted(out.glob("*.parquet")):
        table = pq.read_table(part)
        ids = table.column("image_id").to_numpy(zero_copy_only=False)
        image_id = next((i for i in dict.fromkeys(ids) if (ids == i).sum() >= 2), None)
        if image_id is not None:
            moved = np.flatnonzero(ids == image_id)[::2]
            pq.write_table(table.take(moved), out / "part-spread.parquet")
            pq.write_table(table.take(np.setdiff1d(np.arange(table.num_rows), moved)), part)
            return str(image_id)
    raise AssertionError("no image with two cells")


def test_bags_are_the_same_whoever_groups_them(cells, tmp_path):
    """One row per image, its cells in the same order, whether the fold's process groups the
    cells (few, as here), Ray Data tasks group each Parquet part's images (an image's cells are
    in one part, as `segment` writes them), or, with an image spread over two parts, a Ray Data
    shuffle does; cached or not. Validation bags are the fold's images."""
    folds = pd.read_csv(cells["folds"])

    def bags(cells_dir: Path, in_process_max_bytes: int, cache: bool = True) -> list[tuple]:
        train, val = fold_datasets(str(cells_dir), folds, 0, cache=cache, bags=True,
                                   in_process_max_bytes=in_process_max_bytes)  # fmt: skip
        rows = lambda ds: sorted((r["image_id"], r["n_cells"], r["side"], bytes(r["crops"]), tuple(r["labels"]))  # noqa: E731
                                 for r in ds.take_all())  # fmt: skip
        return rows(train), rows(val)

    assert crops_bytes(str(cells["cells"])) <= IN_PROCESS_MAX_BYTES
    spread_id = _spread_one_image(cells["cells"], tmp_path / "spread")
    assert images_spread_over_parts(str(cells["cells"])) == 0
    assert images_spread_over_parts(str(tmp_path / "spread")) == 1
    train, val = bags(cells["cells"], IN_PROCESS_MAX_BYTES)
    assert (train, val) == bags(cells["cells"], 0) == bags(cells["cells"], 0, cache=False)
    # Spread: every other bag as it was; the spread image's cells the same, in another order.
    as_cells = lambda row: (*row[:3], sorted(c.tobytes() for c in np.frombuffer(row[3], np.uint8).reshape(row[1], -1)),  # noqa: E731
                            row[4])  # fmt: skip
    for before, after in zip((train, val), bags(tmp_path / "spread", 0), strict=True):
        assert [r for r in after if r[0] != spread_id] == [r for r in before if r[0] != spread_id]
        assert [as_cells(r) for r in after if r[0] == spread_id] == [as_cells(r) for r in before if r[0] == spread_id]
    assert {row[0] for row in val} <= set(folds.image_id[folds.fold == 0]) and len(val) > 0
    assert len({row[0] for row in train}) == len(train) > 0


def test_augmentation_draws_follow_the_seed(cells):
    """The flips of a training batch come from (seed, worker, epoch): the same seed draws the
    same flips, another epoch draws others; bags likewise."""
    table = pq.read_table(next(Path(cells["cells"]).glob("*.parquet")), columns=["image_id", "crop", "labels"])
    crops = lambda seed: CellCollate(None, True, seed)(table)["crop"].numpy()  # noqa: E731
    assert np.array_equal(crops((0, 0, 1)), crops((0, 0, 1)))
    assert not np.array_equal(crops((0, 0, 1)), crops((0, 0, 2)))
    bag = {"crops": [crops_to_numpy(table)], "labels": [np.zeros(NUM_CLASSES, np.float32)]}
    drawn = lambda seed: collate_bags(bag, 4, True, rng=np.random.default_rng(seed))["crops"].numpy()  # noqa: E731
    assert np.array_equal(drawn((0, 0, 1)), drawn((0, 0, 1))) and not np.array_equal(drawn((0, 0, 1)), drawn((1, 0, 1)))


@pytest.mark.slow
def test_train_run_again_into_its_run_dir_resumes_the_interrupted_fold(cells, tmp_path):
    """`python -m hpa_ray.train` killed mid-fold, then the same command: the fold goes on from
    its last checkpoint, each epoch once in metrics.csv; another config is refused (exit 2)."""
    run_dir, fold_dir = tmp_path / "run", tmp_path / "run" / "fold-2"
    args = [sys.executable, "-m", "hpa_ray.train", "--cells", str(cells["cells"]), "--folds", str(cells["folds"]),
            "--fold", "2", "--out", str(run_dir), *(f"{k}={v}" for k, v in FAST.items()), "epochs=5"]  # fmt: skip
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    with process_group(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as first:
        deadline = time.time() + 300
        while time.time() < deadline and first.poll() is None and _reports(fold_dir) < 2:
            time.sleep(0.5)
        assert _reports(fold_dir) >= 2 and first.poll() is None, "killed after epoch 1, before the end"
    again = run_group(args, timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    reports = [json.loads(line) for line in (fold_dir / "metrics.jsonl").read_text().splitlines()]
    resumed = [r for r in reports if r["resumed_from_epoch"] >= 0]
    assert resumed and resumed[0]["epoch"] == resumed[0]["resumed_from_epoch"] + 1, "from a checkpoint, not epoch 0"
    assert list(pd.read_csv(fold_dir / "metrics.csv").epoch) == [0, 1, 2, 3, 4]
    recorded = (run_dir / "config.yaml").read_text()
    other = run_group([*args, "epochs=6"], timeout=300, env=env)
    assert other.returncode == 2 and "was trained with another config" in other.stderr, other.stderr[-2000:]
    assert (run_dir / "config.yaml").read_text() == recorded, "the run's record is not overwritten by a refused run"
    # Every fold (through Tune), where only the fold's config tells: one error line too, before Ray
    # starts, not a traceback from inside each trial.
    (run_dir / "config.yaml").unlink()
    every_fold = [*args[:7], *args[9:], "epochs=6"]  # without --fold 2
    every = run_group(every_fold, timeout=300, env=env)
    assert every.returncode == 2 and "was trained with another config" in every.stderr, every.stderr[-2000:]
    assert "Traceback" not in every.stderr and "Ray started" not in every.stdout, every.stderr[-2000:]
    assert not (run_dir / "config.yaml").exists()


def _reports(fold_dir: Path) -> int:
    path = fold_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_cells_that_do_not_say_how_they_were_made_are_refused_at_the_start(cells, tmp_path):
    import shutil

    from hpa_ray.train.data import DataError

    shutil.copytree(cells["cells"], tmp_path / "seg" / "cells")  # no segment_config.yaml beside them
    with pytest.raises(DataError, match="segment_config.yaml is missing"):
        fit_fold(tmp_path / "seg" / "cells", cells["folds"], 0, tmp_path / "run", TrainConfig(**FAST, epochs=1))
    assert not (tmp_path / "run").exists(), "refused before anything was written"
