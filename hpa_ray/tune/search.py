"""Hyperparameter search on Ray Tune: Optuna + ASHA over one fold (`python -m hpa_ray.tune`).

Every trial trains through `hpa_ray.train.fit.fit_fold`, the same Ray Train code as `train`.
The search space lives in conf/tune.yaml. Outputs in RUN_DIR: best_config.yaml (a TrainConfig
that `train --config` accepts), trials.csv (one row per trial), trials/<trial>/fold-K/ (each
trial's metrics and TensorBoard logs), ray_results/ (Tune's experiment, for --resume and the
dashboard / TensorBoard), study.db (the Optuna study: `python -m hpa_ray.tune dashboard RUN_DIR`
opens optuna-dashboard on it). Cells, folds and RUN_DIR may be local or object storage (`s3://…`).
"""

from __future__ import annotations

import sys

import pandas as pd

from hpa_ray.core import storage
from hpa_ray.core.config import ConfigError, load_config, write_resolved
from hpa_ray.core.layout import Search
from hpa_ray.core.locks import owned_by_this_run
from hpa_ray.runtime import cli, console, session
from hpa_ray.train.config import TrainConfig
from hpa_ray.train.data import DataError, check_cells, read_folds
from hpa_ray.train.fit import concurrent_trials, fit_fold, settle_cache
from hpa_ray.tune import study
from hpa_ray.tune.config import SearchDim, TuneConfig

METRIC, MODE = "val_map", "max"
EXIT_INTERRUPTED = 130  # as a shell reports Ctrl-C


class SearchInterrupted(RuntimeError):
    """The search stopped (Ctrl-C, SIGINT) before every trial ended."""


def _domain(dim: SearchDim):
    from ray import tune

    if dim.type == "choice":
        if not dim.values:
            raise ConfigError(f"search dimension of type choice needs values, got {dim.values!r}")
        return tune.choice(dim.values)
    if dim.low is None or dim.high is None or dim.low >= dim.high:
        raise ConfigError(f"search dimension of type {dim.type} needs low < high, got {dim.low}, {dim.high}")
    return (tune.loguniform if dim.type == "loguniform" else tune.uniform)(dim.low, dim.high)


def search_space(cfg: TuneConfig) -> dict:
    """conf/tune.yaml's search_space → Ray Tune domains, checked against TrainConfig's keys."""
    unknown = set(cfg.search_space) - set(TrainConfig.model_fields)
    if unknown:
        raise ConfigError(f"search_space: {sorted(unknown)} are not TrainConfig keys")
    return {key: _domain(dim) for key, dim in cfg.search_space.items()}


def _trial(params: dict, base: dict, cells: str, folds: str, fold: int, run_dir: str) -> None:
    """One trial: the base TrainConfig with the sampled values, trained by fit_fold."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    cfg = TrainConfig.model_validate({**base, **params})
    trial_dir = Search(run_dir).trial(tune.get_context().get_trial_id()).root
    fit_fold(cells, folds, fold, trial_dir, cfg, (TuneReportCallback(),))


def _concurrency(cfg: TuneConfig) -> int:
    """cfg.train's cache_data settled (`settle_cache`); a searched cache_data counts as streaming."""
    if cfg.max_concurrent_trials != "auto":
        return int(cfg.max_concurrent_trials)
    cached = cfg.train.cache_data is True and "cache_data" not in cfg.search_space
    return concurrent_trials(cfg.train, cfg.num_samples, cached=cached)


def _sampler(seed: int):
    """Optuna's TPE with every setting whose default moved between releases stated (Optuna 5
    made multivariate TPE with constant liar the default): a seeded search proposes the same
    trials under any Optuna in requirements.txt's range."""
    import optuna

    if console.quiet():
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # its INFO line per study and trial
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=10, n_ei_candidates=24, multivariate=True,
                                      constant_liar=True)  # fmt: skip


def asha_scheduler(cfg: TuneConfig):
    """ASHA over epochs (Tune's training_iteration): rungs at grace_period × reduction_factor^k
    below max_epochs; a trial whose val_map at a rung is below the rung's cutoff stops there."""
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(max_t=cfg.max_epochs(), grace_period=cfg.asha.grace_period,
                         reduction_factor=cfg.asha.reduction_factor)  # fmt: skip


def _experiment(run_dir: str, cfg: TuneConfig) -> str:
    """Where Tune keeps the search's experiment (what a resumed search restores)."""
    return storage.join(cfg.train.storage_path or Search(run_dir).ray_results, f"{storage.name(run_dir)}-search")


def _started(run_dir: str, cfg: TuneConfig, resume: bool) -> bool:
    """Whether `run_dir` holds a search to continue. ConfigError when it was started with another
    config (continuing it would run the recorded one), or --resume finds none."""
    record = Search(run_dir).config
    started = storage.exists(record) and storage.exists(_experiment(run_dir, cfg))
    if started and load_config(TuneConfig, record) != cfg:
        raise ConfigError(f"{run_dir} holds a search started with another config ({record}): continue it with "
                          f"--config {record}, or give a new --out")  # fmt: skip
    if resume and not started:
        raise ConfigError(f"--resume: no search to resume in {run_dir}")
    return started


def _tuner(cells, folds_csv, run_dir: str, cfg: TuneConfig, resume: bool):
    from ray import tune

    cfg = cfg.model_copy(update={"train": settle_cache(cfg.train, cells)})
    trainable = tune.with_resources(
        tune.with_parameters(_trial, base=cfg.train.model_dump(), cells=storage.absolute(cells),
                             folds=storage.absolute(folds_csv), fold=cfg.fold, run_dir=run_dir),
        {"CPU": 0, "memory": 1},  # the trial's driver holds no CPU: its Train workers do
    )  # fmt: skip
    results = cfg.train.storage_path or Search(run_dir).ray_results
    experiment = _experiment(run_dir, cfg)
    if resume:
        if not tune.Tuner.can_restore(experiment):
            raise ConfigError(f"--resume: no search to resume at {experiment}")
        return tune.Tuner.restore(experiment, trainable=trainable, resume_unfinished=True, resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space=search_space(cfg),
        tune_config=tune.TuneConfig(
            metric=METRIC, mode=MODE, num_samples=cfg.num_samples, scheduler=asha_scheduler(cfg),
            search_alg=study.searcher(cfg, run_dir, _sampler(cfg.seed), METRIC, MODE),
            max_concurrent_trials=_concurrency(cfg),
        ),
        run_config=tune.RunConfig(name=storage.name(experiment), storage_path=results, verbose=console.tune_verbosity(),
                                  callbacks=[*console.tune_callbacks(None, cfg.max_epochs()),
                                             session.tensorboard_scalars()]),  # fmt: skip
    )  # fmt: skip


def _plain(value):
    """numpy scalars → Python's (TensorBoard's HParams takes bool, str, int, float)."""
    return value.item() if hasattr(value, "item") else value


def trial_status(row, max_epochs: int) -> str:
    """error | completed | stopped by ASHA (trials.csv's `pruned`; before it, fewer epochs than the most)."""
    if row["error"]:
        return "error"
    pruned = row["pruned"] if "pruned" in row else row["epochs_run"] < max_epochs
    return "stopped by ASHA" if pruned else "completed"


def write_hparams(run_dir: str, table: pd.DataFrame, cfg: TuneConfig) -> str:
    """TensorBoard's HParams view of the search: per trial its searched values and status beside
    its best metric and epochs run, in RUN_DIR/tensorboard/hparams/TRIAL (each trial's per-epoch
    curves are in RUN_DIR/trials/TRIAL/fold-K/tensorboard). → that directory."""
    import tempfile

    from tensorboardX import SummaryWriter

    target = Search(run_dir).hparams
    local = tempfile.mkdtemp(prefix="hpa-hparams-") if storage.is_uri(run_dir) else target
    most = cfg.max_epochs()
    with SummaryWriter(local) as writer:
        for row in table.to_dict("records"):
            params = {name: _plain(row[name]) for name in cfg.search_space}
            params["status"] = trial_status(row, most)
            metrics = {f"best_{METRIC}": float(row[f"best_{METRIC}"]), "epochs_run": float(row["epochs_run"])}
            writer.add_hparams(params, metrics, name=str(row["trial_id"]))
    if local != target:
        storage.upload_dir(local, target)
    return target


def run_search(cells, folds_csv, run_dir, cfg: TuneConfig, resume: bool = False) -> pd.DataFrame:
    """Run the search, or continue the one started in `run_dir` (as train resumes its folds;
    `resume`: there must be one); writes best_config.yaml and trials.csv; returns the table."""
    if cfg.fold not in set(read_folds(folds_csv).fold):
        raise DataError(f"fold {cfg.fold} is not in {folds_csv}")
    search_space(cfg)  # config errors before anything starts
    check_cells(storage.absolute(cells))
    run_dir = storage.absolute(run_dir)
    resume = _started(run_dir, cfg, resume)
    session.init_ray()
    storage.makedirs(run_dir)
    with owned_by_this_run(run_dir):
        if resume:
            print(f"tune: continuing the search started in {run_dir}", flush=True)
        write_resolved(cfg, Search(run_dir).config)
        grid = _tuner(cells, folds_csv, run_dir, cfg, resume).fit()
    if grid.num_terminated + grid.num_errors < cfg.num_samples:
        raise SearchInterrupted(f"search stopped with {grid.num_terminated} of {cfg.num_samples} trials done; "
                                "run the same command with --resume to continue it")  # fmt: skip
    rows = []
    for result in grid:
        history = result.metrics_dataframe
        best = history[METRIC].max() if history is not None and METRIC in history else float("nan")
        epochs = int(history["epoch"].max()) + 1 if history is not None and "epoch" in history else 0
        metrics = result.metrics or {}
        rows.append({"trial_id": metrics.get("trial_id"), **result.config, "epochs_run": epochs,
                     f"best_{METRIC}": best, "error": str(result.error or ""),
                     "pruned": not result.error and not metrics.get(study.LAST_EPOCH, True)})  # fmt: skip
    table = pd.DataFrame(rows).sort_values(f"best_{METRIC}", ascending=False)
    storage.write_text(Search(run_dir).trials_csv, table.to_csv(index=False))
    write_hparams(run_dir, table, cfg)
    study.publish(run_dir, cfg)
    best = grid.get_best_result(metric=METRIC, mode=MODE, scope="all")
    best_cfg = TrainConfig.model_validate({**cfg.train.model_dump(), **best.config})
    write_resolved(best_cfg, Search(run_dir).best_config)
    return table


def dashboard_main(argv: list[str]) -> int:
    """`python -m hpa_ray.tune dashboard RUN_DIR [--host H] [--port P]`: optuna-dashboard over
    the search's study (live while the search runs), until Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m hpa_ray.tune dashboard", description=dashboard_main.__doc__)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the search's --out")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    args = parser.parse_args(argv)
    try:
        return cli.guarded(lambda: study.serve_dashboard(args.run_dir, args.host, args.port) or 0)
    except KeyboardInterrupt:
        return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["dashboard"]:
        return dashboard_main(argv[1:])
    parser = cli.StageParser("hpa_ray.tune", __doc__,
                             epilog="The search in optuna-dashboard: python -m hpa_ray.tune dashboard OUT [--host H] "
                             "[--port P]. Exit status: 0 searched, 2 unusable inputs or config, "
                             f"{EXIT_INTERRUPTED} interrupted (--resume continues it).")  # fmt: skip
    parser.flag("--cells", required=True)
    parser.flag("--folds", required=True)
    parser.out("dir", "the search directory: best_config.yaml, trials.csv, trials/", old=("--run-dir",))
    parser.add_argument("--resume", action="store_true", help="continue the search in --out, which must hold one "
                        "(without it, one there is continued too)")  # fmt: skip
    parser.config("conf/tune.yaml", "num_samples=4 train.model=tiny")
    args = parser.parse(argv)
    console.setup(console.log_file_for(args.out, "tune"), args.verbose)
    try:
        return cli.guarded(lambda: _tune_cli(args))
    except SearchInterrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED


def _tune_cli(args) -> int:
    cfg = load_config(TuneConfig, args.config, args.overrides)
    table = run_search(args.cells, args.folds, args.out, cfg, args.resume)
    print(table.to_string(index=False, max_colwidth=30))
    print(
        f"tune: {len(table)} trials; best {METRIC} {table[f'best_{METRIC}'].max():.4f}; "
        f"best config → {Search(args.out).best_config} (python -m hpa_ray.train --config it); "
        f"the study in optuna-dashboard: python -m hpa_ray.tune dashboard {args.out}"
    )
    return 0
