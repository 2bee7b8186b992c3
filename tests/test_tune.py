"""Ray Tune search (Optuna + ASHA) through the same Ray Train code, on CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from hpa_ray.config import ConfigError, TrainConfig, TuneConfig, load_config
from hpa_ray.tune import EXIT_INTERRUPTED, run_search, search_space
from tests.test_train import cells  # noqa: F401 - the module fixture of synthetic cells

SPACE = "search_space={lr: {type: loguniform, low: 0.0003, high: 0.01}, epochs: {type: choice, values: [4]}}"
BASE = ["train.model=tiny", "train.cpus_per_worker=0.5", "train.batch_size=32", "asha.grace_period=1", SPACE]


def test_asha_stops_weak_trials_and_best_config_loads_in_train(cells, tmp_path):  # noqa: F811
    cfg = load_config(TuneConfig, None, [*BASE, "num_samples=4", "max_concurrent_trials=2"])
    table = run_search(cells["cells"], cells["folds"], tmp_path / "search", cfg)
    assert len(table) == 4 and (table.error == "").all()
    assert (table.epochs_run < 4).any(), "ASHA stopped some trial before the last epoch"
    assert (table.epochs_run == 4).any()
    best = load_config(TrainConfig, tmp_path / "search" / "best_config.yaml")
    assert best.model == "tiny" and best.lr == pytest.approx(table.iloc[0].lr)
    on_disk = pd.read_csv(tmp_path / "search" / "trials.csv")
    assert list(on_disk.trial_id) == list(table.trial_id)
    trial_dirs = list((tmp_path / "search" / "trials").iterdir())
    assert len(trial_dirs) == 4 and all((d / "fold-0" / "metrics.jsonl").exists() for d in trial_dirs)


def test_search_space_errors():
    with pytest.raises(ConfigError, match="not TrainConfig keys"):
        search_space(load_config(TuneConfig, None, ["search_space={lrate: {type: choice, values: [1]}}"]))
    with pytest.raises(ConfigError, match="low < high"):
        search_space(load_config(TuneConfig, None, ["search_space={lr: {type: loguniform, low: 1, high: 0.1}}"]))


def test_interrupted_search_resumes(cells, tmp_path):  # noqa: F811
    run_dir = tmp_path / "search"
    args = [sys.executable, "-m", "hpa_ray.tune", "--cells", str(cells["cells"]), "--folds", str(cells["folds"]),
            "--run-dir", str(run_dir), *BASE, "num_samples=3", "max_concurrent_trials=1"]  # fmt: skip
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    first = subprocess.Popen(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 300
    while time.time() < deadline and not list(run_dir.glob("trials/*/fold-0/metrics.jsonl")):
        time.sleep(1)
    assert list(run_dir.glob("trials/*/fold-0/metrics.jsonl")), "the first run never started a trial"
    os.killpg(first.pid, signal.SIGINT)  # what Ctrl-C does
    assert first.wait(timeout=120) == EXIT_INTERRUPTED
    assert not (run_dir / "trials.csv").exists(), "the first run was interrupted before the end"
    resumed = subprocess.run([*args, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    table = pd.read_csv(run_dir / "trials.csv")
    assert len(table) == 3 and table.trial_id.is_unique


def test_seeded_sampler_states_its_settings_and_repeats():
    import optuna

    from hpa_ray.tune import _sampler

    def proposals(seed: int) -> list[float]:
        study = optuna.create_study(direction="maximize", sampler=_sampler(seed))
        values = []
        for _ in range(12):  # past the random start-up trials, into TPE proper
            trial = study.ask()
            values.append(trial.suggest_float("lr", 1e-4, 1e-2, log=True))
            study.tell(trial, -abs(np.log10(values[-1]) + 2.5))
        return values

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    assert proposals(3) == proposals(3) and proposals(3) != proposals(4)
    sampler = _sampler(3)
    assert sampler._multivariate is True and sampler._constant_liar is True  # Optuna 5's defaults, stated
