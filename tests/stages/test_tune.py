"""Ray Tune search (Optuna + ASHA) through the same Ray Train code, on CPU.

The cells: tests/stages/conftest.py's `cells`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pandas as pd
import pytest

from hpa_ray.core.config import load_config
from hpa_ray.runtime.session import free_port
from hpa_ray.train.config import TrainConfig
from hpa_ray.tune.config import TuneConfig
from hpa_ray.tune.search import EXIT_INTERRUPTED, run_search
from tests.helpers import chromium_dom, chromium_screenshot, loaded_images, process_group, run_group

SPACE = "search_space={lr: {type: loguniform, low: 0.0003, high: 0.01}, epochs: {type: choice, values: [4]}}"
BASE = ["train.model=tiny", "train.cpus_per_worker=0.5", "train.batch_size=32", "asha.grace_period=1", SPACE]


@pytest.mark.slow
def test_asha_stops_weak_trials_and_best_config_loads_in_train(cells, tmp_path):
    cfg = load_config(TuneConfig, None, [*BASE, "num_samples=4", "max_concurrent_trials=2"])
    table = run_search(cells["cells"], cells["folds"], tmp_path / "search", cfg)
    assert len(table) == 4 and (table.error == "").all()
    # Whether ASHA stops a trial here depends on which trial reaches a rung first (timing):
    # its decision is tested apart, below; here, the first trial at the last rung goes on.
    assert (table.epochs_run == 4).any() and table.epochs_run.between(1, 4).all()
    best = load_config(TrainConfig, tmp_path / "search" / "best_config.yaml")
    assert best.model == "tiny" and best.lr == pytest.approx(table.iloc[0].lr)
    on_disk = pd.read_csv(tmp_path / "search" / "trials.csv")
    assert list(on_disk.trial_id) == list(table.trial_id)
    trial_dirs = list((tmp_path / "search" / "trials").iterdir())
    assert len(trial_dirs) == 4 and all((d / "fold-0" / "metrics.jsonl").exists() for d in trial_dirs)
    _search_report_shows_every_trial(tmp_path / "search", table, tmp_path)
    _tensorboard_shows_every_trial(tmp_path / "search", table)
    _dashboard_shows_the_study(tmp_path / "search", table, tmp_path)


def _get_json(url: str, timeout: float = 180):
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.load(response)
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


def _dashboard_shows_the_study(run_dir, table, tmp_path):
    """`python -m hpa_ray.tune dashboard RUN_DIR` serves optuna-dashboard on the search's study:
    one study, a trial per sample, ASHA's stops PRUNED and the rest COMPLETE, every epoch's
    value there; its study page renders in headless Chromium (a screenshot, not blank)."""
    port = free_port()
    command = [sys.executable, "-m", "hpa_ray.tune", "dashboard", str(run_dir), "--port", str(port)]
    with process_group(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True):
        studies = _get_json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
        assert len(studies) == 1 and studies[0]["study_name"].startswith("search-"), studies
        study_id = studies[0]["study_id"]
        trials = _get_json(f"http://127.0.0.1:{port}/api/studies/{study_id}")["trials"]
        assert len(trials) == len(table)
        by_lr = {round(float(row.lr), 12): row for row in table.itertuples()}
        for trial in trials:
            lr = next(float(p["param_external_value"]) for p in trial["params"] if p["name"] == "lr")
            row = by_lr[round(lr, 12)]
            assert trial["state"] == ("Pruned" if row.pruned else "Complete"), (trial["state"], row)
            assert [v["step"] for v in trial["intermediate_values"]] == list(range(1, row.epochs_run + 1))
            epochs = pd.read_json(run_dir / "trials" / row.trial_id / "fold-0" / "metrics.jsonl", lines=True)
            # (a trial ASHA stopped may log one more epoch before it is stopped: Tune never sees it)
            assert trial["intermediate_values"][-1]["value"] == pytest.approx(epochs.val_map[row.epochs_run - 1])
        shot = chromium_screenshot(f"http://127.0.0.1:{port}/dashboard/studies/{study_id}", tmp_path / "profile-od",
                                   tmp_path / "dashboard.png")  # fmt: skip
    assert shot.std() > 10 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 50, "a blank page"


def _search_report_shows_every_trial(run_dir, table: pd.DataFrame, tmp_path) -> None:
    from hpa_ray.report.build import main as report

    assert report(["--out", str(tmp_path / "report"), "--search-dir", str(run_dir)]) == 0
    page = (tmp_path / "report" / "index.html").read_text()
    assert "<h2>Search</h2>" in page and str(table.iloc[0].trial_id) in page, "the best trial's table"
    stopped = int((table.epochs_run < 4).sum())
    assert f"({stopped} of them)" in page, "the caption counts the trials ASHA stopped"
    count, broken = loaded_images(chromium_dom((tmp_path / "report" / "index.html").as_uri(), tmp_path / "profile"))
    assert count == 2 and not broken, broken


def _tensorboard_shows_every_trial(run_dir, table: pd.DataFrame) -> None:
    """TensorBoard on 127.0.0.1 over the whole search directory, as the README says: its HParams
    data lists every trial once, with its status beside its best val_map, and nothing else (Tune's
    own per-trial HParams sessions are not written)."""
    port = free_port()
    board = [sys.executable, "-m", "tensorboard.main", "--logdir", str(run_dir), "--host", "127.0.0.1",
             "--port", str(port)]  # fmt: skip
    with process_group(board, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
        groups = _session_groups(port)
    ours = {g["name"].rsplit("/", 1)[-1]: g for g in groups if g["name"].startswith("tensorboard/hparams/")}
    assert set(ours) == set(table.trial_id) and len(groups) == len(ours), [g["name"] for g in groups]
    for row in table.itertuples():
        status = "stopped by ASHA" if row.pruned else "completed"
        metrics = {m["name"]["tag"]: m["value"] for m in ours[row.trial_id]["metricValues"]}
        assert ours[row.trial_id]["hparams"]["status"] == status
        assert metrics["best_val_map"] == pytest.approx(row.best_val_map, abs=1e-6)


def _session_groups(port: int, timeout: float = 180) -> list[dict]:
    statuses = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
    request = json.dumps({"experimentName": "", "startIndex": 0, "sliceSize": 100, "colParams": [],
                          "allowedStatuses": statuses})  # fmt: skip
    deadline = time.time() + timeout
    while True:
        try:
            reply = urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{port}/data/plugin/hparams/session_groups", request.encode(),
                {"Content-Type": "application/json"}), timeout=10)  # fmt: skip
            groups = json.loads(reply.read())["sessionGroups"]
            ours = [g for g in groups if "hparams/" in g["name"]]
            # TensorBoard lists a session before it has read its metrics: wait for both
            if ours and all(len(g.get("metricValues", [])) >= 2 for g in ours):
                return groups
        except OSError:
            pass
        if time.time() > deadline:
            raise AssertionError(f"TensorBoard on port {port} listed no sessions within {timeout} s")
        time.sleep(1)


@pytest.mark.slow
def test_interrupted_search_resumes(cells, tmp_path):
    run_dir = tmp_path / "search"
    args = [sys.executable, "-m", "hpa_ray.tune", "--cells", str(cells["cells"]), "--folds", str(cells["folds"]),
            "--out", str(run_dir), *BASE, "num_samples=2", "max_concurrent_trials=1"]  # fmt: skip
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    with process_group(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as first:
        deadline = time.time() + 300
        while time.time() < deadline and not list(run_dir.glob("trials/*/fold-0/metrics.jsonl")):
            time.sleep(1)
        assert list(run_dir.glob("trials/*/fold-0/metrics.jsonl")), "the first run never started a trial"
        live = _first_reported_trial(f"sqlite:///{run_dir / 'study.db'}")  # what the dashboard reads, live
        assert live.state.name == "RUNNING" and live.intermediate_values, live
        os.killpg(first.pid, signal.SIGINT)  # what Ctrl-C does
        assert first.wait(timeout=300) == EXIT_INTERRUPTED
    assert not (run_dir / "trials.csv").exists(), "the first run was interrupted before the end"
    resumed = run_group([*args, "--resume"], timeout=600, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    table = pd.read_csv(run_dir / "trials.csv")
    assert len(table) == 2 and table.trial_id.is_unique  # the interrupted trial and the one never started
    import optuna

    # The same study went on: one per search, its trials the samples, none twice, all ended.
    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{run_dir / 'study.db'}")
    trials = optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{run_dir / 'study.db'}").trials
    assert len(trials) == 2 and all(t.state.is_finished() for t in trials), trials
    # The same command again, without --resume, continues the search there (as train does its
    # folds): it is finished, so no trial runs; with another config it is refused before Ray starts.
    again = run_group(args, timeout=600, env=env)
    assert again.returncode == 0 and "continuing the search started in" in again.stdout, again.stderr[-3000:]
    assert pd.read_csv(run_dir / "trials.csv").trial_id.tolist() == table.trial_id.tolist()
    other = run_group([*args, "num_samples=3"], timeout=300, env=env)
    assert other.returncode == 2 and "holds a search started with another config" in other.stderr
    assert "Ray started" not in other.stdout


def _first_reported_trial(url: str, timeout: float = 180):
    """The study's first trial with an intermediate value, read while the search runs."""
    import optuna

    deadline = time.time() + timeout
    while time.time() < deadline:
        with contextlib.suppress(Exception):  # the searcher may still be creating the study's tables
            for summary in optuna.get_all_study_summaries(url):
                reported = [t for t in optuna.load_study(study_name=summary.study_name, storage=url).trials
                            if t.intermediate_values]  # fmt: skip
                if reported:
                    return reported[0]
        time.sleep(0.5)
    raise AssertionError(f"no trial reported to the study {url} within {timeout} s")
