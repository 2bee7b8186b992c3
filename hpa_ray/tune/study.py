"""The search's Optuna study, persisted, and the dashboard that shows it.

Ray's OptunaSearch keeps its study in memory unless given a storage, and tells Optuna that a
trial ASHA stopped is COMPLETE, without its last epoch's value. Here the study lives in an RDB
storage (a SQLite file in the search's directory, RUN_DIR/study.db, unless `study_storage`
names a database the head reaches), under a name of its own per search, and a trial that did
not end by itself (ASHA stopped it) is PRUNED with every epoch's value: optuna-dashboard
(`python -m hpa_ray.tune dashboard RUN_DIR`) shows the search as Optuna users expect.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
import warnings
from pathlib import Path

from hpa_ray.core import storage
from hpa_ray.core.config import ConfigError, load_config
from hpa_ray.core.layout import Search
from hpa_ray.tune.config import TuneConfig

LAST_EPOCH = "last_epoch"  # a trial's result key: True when its own epochs or patience end it


def _local_db(run_dir: str) -> Path:
    """A search on object storage keeps its SQLite file on this machine while it runs."""
    digest = hashlib.sha1(run_dir.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "hpa_ray-studies" / f"{digest}.db"


def storage_url(run_dir: str, cfg: TuneConfig) -> str:
    """The study's SQLAlchemy URL: cfg.study_storage, else SQLite at RUN_DIR/study.db (for an
    object-storage RUN_DIR, a local file copied there by `publish`)."""
    if cfg.study_storage:
        return cfg.study_storage
    if storage.is_uri(run_dir):
        path = _local_db(run_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() and storage.exists(Search(run_dir).study_db):  # resuming elsewhere
            path.write_bytes(storage.read_bytes(Search(run_dir).study_db))
        return f"sqlite:///{path}"
    return f"sqlite:///{Path(Search(run_dir).study_db).resolve()}"


def publish(run_dir: str, cfg: TuneConfig) -> None:
    """Copy a local SQLite study of an object-storage RUN_DIR to RUN_DIR/study.db."""
    if not cfg.study_storage and storage.is_uri(run_dir) and _local_db(run_dir).exists():
        storage.write_bytes(Search(run_dir).study_db, _local_db(run_dir).read_bytes())


def new_study_name(run_dir: str) -> str:
    """Unique per search: one storage may hold many searches' studies, never mixed."""
    return f"{storage.name(run_dir)}-{time.strftime('%Y%m%d-%H%M%S')}"


def searcher(cfg: TuneConfig, run_dir: str, sampler, metric: str, mode: str):
    """Ray's OptunaSearch over the persisted study, ending trials as `_StudySearch` does."""
    from ray.tune.search.optuna import OptunaSearch

    class _StudySearch(OptunaSearch):
        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
            if trial_id in self._completed_trials or not result or error or metric not in result:
                return super().on_trial_complete(trial_id, result, error)
            ot_trial = self._ot_trials[trial_id]
            with warnings.catch_warnings():  # a step reported already is ignored, with a warning
                warnings.simplefilter("ignore")
                ot_trial.report(result[metric], result["training_iteration"])  # the result Tune did not pass on
            if result.get(LAST_EPOCH, True):
                return super().on_trial_complete(trial_id, result, error)
            self._ot_study.tell(ot_trial, None, state=optuna.trial.TrialState.PRUNED)
            self._completed_trials.add(trial_id)

    import optuna

    return _StudySearch(sampler=sampler, metric=metric, mode=mode, study_name=new_study_name(run_dir),
                        storage=optuna.storages.RDBStorage(storage_url(run_dir, cfg)))  # fmt: skip


def dashboard_storage(run_dir: str) -> str:
    """The study storage of a search directory, for the dashboard; ConfigError when it has none."""
    run_dir = storage.absolute(run_dir)
    if not storage.exists(Search(run_dir).config):
        raise ConfigError(f"{run_dir} is not a search directory: it has no {storage.name(Search(run_dir).config)}")
    cfg = load_config(TuneConfig, Search(run_dir).config)
    if not cfg.study_storage and not storage.exists(Search(run_dir).study_db) and not _local_db(run_dir).exists():
        raise ConfigError(f"{run_dir} has no study: searches before the study was kept have none")
    return storage_url(run_dir, cfg)


def serve_dashboard(run_dir: str, host: str = "127.0.0.1", port: int = 8080) -> None:
    """optuna-dashboard over the search's study until Ctrl-C."""
    from optuna_dashboard import run_server

    url = dashboard_storage(run_dir)
    print(f"tune dashboard: http://{host}:{port}/dashboard/  (study storage {url}; Ctrl-C stops it)", flush=True)
    run_server(url, host=host, port=port)
