"""Ray Tune search's pieces without a search: ASHA's decision, the search space's checks, the
seeded sampler."""

from __future__ import annotations

import numpy as np
import pytest

from hpa_ray.core.config import ConfigError, load_config
from hpa_ray.tune.config import TuneConfig
from hpa_ray.tune.search import search_space

SPACE = "search_space={lr: {type: loguniform, low: 0.0003, high: 0.01}, epochs: {type: choice, values: [4]}}"
BASE = ["train.model=tiny", "train.cpus_per_worker=0.5", "train.batch_size=32", "asha.grace_period=1", SPACE]


def test_asha_stops_a_trial_below_its_rung_cutoff():
    """The scheduler the search uses, fed fixed results: the first trial at a rung goes on, a
    later one below the rung's cutoff (median, reduction factor 2) stops, one above goes on."""
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from hpa_ray.tune.search import METRIC, MODE, asha_scheduler

    cfg = load_config(TuneConfig, None, [*BASE, "asha.grace_period=1", "asha.reduction_factor=2"])
    scheduler = asha_scheduler(cfg)
    scheduler.set_search_properties(METRIC, MODE)
    trials = [SimpleNamespace(trial_id=name) for name in ("first", "weak", "strong")]
    for trial in trials:
        scheduler.on_trial_add(None, trial)
    decide = lambda trial, value: scheduler.on_trial_result(None, trial, {"training_iteration": 1, METRIC: value})  # noqa: E731
    assert decide(trials[0], 0.5) == TrialScheduler.CONTINUE
    assert decide(trials[1], 0.2) == TrialScheduler.STOP
    assert decide(trials[2], 0.9) == TrialScheduler.CONTINUE


def test_search_space_errors():
    with pytest.raises(ConfigError, match="not TrainConfig keys"):
        search_space(load_config(TuneConfig, None, ["search_space={lrate: {type: choice, values: [1]}}"]))
    with pytest.raises(ConfigError, match="low < high"):
        search_space(load_config(TuneConfig, None, ["search_space={lr: {type: loguniform, low: 1, high: 0.1}}"]))


def test_seeded_sampler_states_its_settings_and_repeats():
    import optuna

    from hpa_ray.tune.search import _sampler

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
