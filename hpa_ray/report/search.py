"""The report's search section (`python -m hpa_ray.report --search-dir RUN_DIR`): a `tune` run's
trials as curves (where ASHA stopped them), the metric against each searched parameter, and the
best trial's configuration.

Reads what `hpa_ray.tune` writes: RUN_DIR/tune_config.yaml (the searched space and fold),
RUN_DIR/trials.csv (one row per trial: its parameters, epochs run, best val_map, error) and each
trial's RUN_DIR/trials/ID/fold-K/metrics.jsonl (one line per epoch, also for stopped trials).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from hpa_ray.core import storage
from hpa_ray.core.config import load_config
from hpa_ray.core.layout import Search
from hpa_ray.report import figures as figs
from hpa_ray.report.page import Section
from hpa_ray.tune.config import TuneConfig

METRIC = "val_map"


def read_search(run_dir: str) -> tuple[TuneConfig, pd.DataFrame, dict[str, pd.DataFrame]]:
    """→ (tune config, trials table, trial ID → per-epoch metrics). ValueError when RUN_DIR is
    not a finished search."""
    search = Search(run_dir)
    for path in (search.config, search.trials_csv):
        if not storage.exists(path):
            raise ValueError(f"--search-dir {run_dir}: no {storage.name(path)} (a directory written by "
                             "python -m hpa_ray.tune)")  # fmt: skip
    cfg = load_config(TuneConfig, search.config)
    trials = storage.read_csv(search.trials_csv, dtype={"trial_id": str, "error": str}, keep_default_na=False)
    curves = {}
    for trial_id in trials.trial_id:
        path = search.trial(trial_id).fold(cfg.fold).metrics_jsonl
        if storage.exists(path):
            rows = [json.loads(line) for line in storage.read_text(path).splitlines() if line.strip()]
            curves[trial_id] = pd.DataFrame(rows).drop_duplicates("epoch", keep="last").sort_values("epoch")
    return cfg, trials, curves


def _best_table(cfg: TuneConfig, trials: pd.DataFrame) -> str:
    best = trials.loc[trials[f"best_{METRIC}"].idxmax()]
    rows = [("trial", best.trial_id), (f"best {METRIC}", f"{best[f'best_{METRIC}']:.4f}"),
            ("epochs run", int(best.epochs_run))]  # fmt: skip
    rows += [(name, f"{best[name]:.4g}" if isinstance(best[name], float) else best[name]) for name in cfg.search_space]
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return (f"<h3>Best trial</h3><table>{cells}</table><p>Its whole configuration: <code>best_config.yaml</code> "
            "in the search directory, for <code>python -m hpa_ray.train --config</code>.</p>")  # fmt: skip


def search_section(run_dir: str, out: Path):
    """→ the report Section for a search directory."""
    from hpa_ray.tune.search import trial_status

    cfg, trials, curves = read_search(run_dir)
    most = cfg.max_epochs()
    space = {name: dim.type for name, dim in cfg.search_space.items()}
    stopped = sum(trial_status(row, most) == "stopped by ASHA" for row in trials.to_dict("records"))
    figures = [
        (figs.search_curves(curves, trials, most, METRIC, out / "search_curves.png"),
         f"Validation {METRIC} per epoch, one line per trial ({len(trials)} trials, fold {cfg.fold}); "
         f"× marks a trial ASHA stopped before {most} epochs ({stopped} of them); the best trial is bold."),
        (figs.search_parameters(trials, space, f"best_{METRIC}", out / "search_parameters.png"),
         f"Each trial's best {METRIC} against each searched parameter ({', '.join(space)}); "
         "hollow markers: trials stopped early."),
    ]  # fmt: skip
    return Section("Search", figures, _best_table(cfg, trials))
