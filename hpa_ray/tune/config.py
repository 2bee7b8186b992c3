"""The tune stage's configuration (conf/tune.yaml): the search, over train's section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from hpa_ray.core.config import Section
from hpa_ray.train.config import TrainConfig


class SearchDim(Section):
    type: Literal["loguniform", "uniform", "choice"]  # how the values are drawn
    low: float | None = None  # loguniform/uniform: lower bound
    high: float | None = None  # loguniform/uniform: upper bound
    values: list | None = None  # choice: the candidates


class AshaConfig(Section):
    grace_period: int = Field(2, ge=1)  # epochs every trial gets before it may be stopped
    reduction_factor: int = Field(2, ge=2)  # 1/reduction_factor of the trials go on at each rung


class TuneConfig(Section):
    fold: int = 0  # the fold whose validation AP is optimised
    num_samples: int = Field(8, ge=1)  # trials
    max_concurrent_trials: int | Literal["auto"] = "auto"  # what fits (train.concurrent_trials)
    seed: int = 0  # Optuna's sampler seed
    # Where the Optuna study lives (a SQLAlchemy URL, e.g. postgresql://… or sqlite:////shared/s.db);
    # None: SQLite at RUN_DIR/study.db. Each search is a study of its own name in it.
    study_storage: str | None = None
    asha: AshaConfig = AshaConfig()  # early stopping of weak trials
    search_space: dict[str, SearchDim] = {  # TrainConfig keys → how to draw them
        "lr": SearchDim(type="loguniform", low=1e-4, high=3e-3),
        "weight_decay": SearchDim(type="loguniform", low=1e-6, high=1e-3),
        "batch_size": SearchDim(type="choice", values=[16, 32, 64]),
        "epochs": SearchDim(type="choice", values=[6, 8]),
    }
    train: TrainConfig = TrainConfig()  # the base every trial starts from

    def max_epochs(self) -> int:
        """The most epochs a trial may run (ASHA's max_t): the largest searched `epochs`, else the base's."""
        dim = self.search_space.get("epochs")
        return int(max(dim.values)) if dim and dim.type == "choice" and dim.values else self.train.epochs

    @model_validator(mode="after")
    def _grace_within_epochs(self) -> TuneConfig:
        # Ray's ASHA asserts this with a bare traceback; say which settings disagree instead.
        most = self.max_epochs()
        if self.asha.grace_period > most:
            raise ValueError(f"asha.grace_period ({self.asha.grace_period}) is more than the most epochs a trial "
                             f"runs ({most}): lower it or search more epochs")  # fmt: skip
        return self
