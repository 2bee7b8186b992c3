"""Image-level folds by iterative stratification (`python -m hpa_ray.folds`).

Folds are made over IMAGES, so every cell inherits its image's fold and no image is split
across folds (splitting cells leaks near-identical cells between training and validation).
scikit-multilearn's IterativeStratification (order 2) places the images; a repair pass then
moves single images between folds while that brings a class with at least `min_positives`
closer to its ideal share (on the real 21,806-image label file: worst deviation 10–30% before,
3.8% after, for any seed).
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hpa_ray.core import storage
from hpa_ray.core.config import load_config, write_resolved
from hpa_ray.core.images import InputError, read_labels_csv
from hpa_ray.core.schema import CLASS_NAMES, NUM_CLASSES, parse_labels
from hpa_ray.folds.config import FoldsConfig
from hpa_ray.runtime import cli

log = logging.getLogger(__name__)


def read_label_matrix(path: str | Path) -> tuple[list[str], np.ndarray]:
    """labels CSV → (image IDs, (N, NUM_CLASSES) uint8 multi-hot); InputError names the line."""
    df = read_labels_csv(path)
    ids = [str(i).strip() for i in df["ID"]]
    y = np.zeros((len(df), NUM_CLASSES), np.uint8)
    bad = []  # every unusable row is said at once, not one per run
    for row, text in enumerate(df["Label"]):
        try:
            y[row] = parse_labels(text)
        except ValueError as exc:
            bad.append(f"line {row + 2}: {exc}")
    if bad:
        more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise InputError(f"{path}: {len(bad)} row(s) with unusable labels: {'; '.join(bad[:5])}{more}")
    keep = _first_of_repeats(ids, y, path)
    return [ids[i] for i in keep], y[keep]


def _first_of_repeats(ids: list[str], y: np.ndarray, path) -> np.ndarray:
    """Row indices keeping each ID once. An ID listed again with the same labels is one image
    (a warning, as segment does); with other labels, InputError."""
    frame = pd.DataFrame({"id": ids, "labels": [row.tobytes() for row in y]})
    repeated = frame[frame.id.duplicated(keep=False)]
    if repeated.empty:
        return np.arange(len(ids))
    conflicting = repeated.groupby("id").labels.nunique()
    if (conflicting > 1).any():
        dup = conflicting[conflicting > 1].index[0]
        lines = (frame.index[frame.id == dup] + 2).tolist()
        raise InputError(f"{path}: ID {dup!r} appears on lines {lines} with different labels")
    log.warning("%s: %d ID(s) listed more than once with the same labels (e.g. %s); each counted once",
                path, repeated.id.nunique(), repeated.id.iloc[0])  # fmt: skip
    return np.flatnonzero(~frame.id.duplicated().to_numpy())


def _stratify(y: np.ndarray, n_folds: int, order: int, seed: int) -> np.ndarray:
    from skmultilearn.model_selection import IterativeStratification

    # Seeded by permuting the rows: the splitter's own random_state is refused with
    # scikit-learn >= 1.9 ("no effect since shuffle is False").
    # It also breaks ties with numpy's global generator: seed that too, and put it back.
    perm = np.random.default_rng(seed).permutation(len(y))
    folds = np.full(len(y), -1, np.int64)
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            splits = IterativeStratification(n_splits=n_folds, order=order).split(np.zeros((len(y), 1)), y[perm])
            for fold, (_, test) in enumerate(splits):
                folds[perm[test]] = fold
    finally:
        np.random.set_state(state)
    return folds


def _repair(y: np.ndarray, folds: np.ndarray, n_folds: int, cfg: FoldsConfig) -> np.ndarray:
    """Move one image at a time from the fold with the most to the fold with the fewest
    positives of the worst class, choosing the image that lowers the total squared deviation
    over all its labels most; stop when no move helps or every class is within tolerance."""
    folds = folds.copy()
    ideal = np.maximum(y.sum(0) / n_folds, 1e-9)
    counts = np.stack([y[folds == k].sum(0) for k in range(n_folds)]).astype(float)
    watched = y.sum(0) >= cfg.min_positives
    for _ in range(cfg.repair_steps):
        rel = np.where(watched, counts / ideal - 1, 0.0)
        cls = int(np.abs(rel).max(0).argmax())
        if abs(rel[:, cls]).max() <= cfg.tolerance:
            break
        hi, lo = int(rel[:, cls].argmax()), int(rel[:, cls].argmin())
        cand = np.flatnonzero((folds == hi) & (y[:, cls] == 1))
        labs = y[cand].astype(float)  # (m, C)
        after = ((counts[hi] - labs) / ideal - 1) ** 2 + ((counts[lo] + labs) / ideal - 1) ** 2
        before = (counts[hi] / ideal - 1) ** 2 + (counts[lo] / ideal - 1) ** 2
        gain = ((after - before) * labs).sum(1)
        best = int(gain.argmin())
        if gain[best] >= 0:
            break
        folds[cand[best]] = lo
        counts[hi] -= labs[best]
        counts[lo] += labs[best]
    return folds


def make_folds(y: np.ndarray, cfg: FoldsConfig) -> np.ndarray:
    """y: (N, NUM_CLASSES) multi-hot → (N,) int64 fold of each image, 0..n_folds-1."""
    if len(y) < cfg.n_folds:
        raise InputError(f"{len(y)} images cannot make {cfg.n_folds} folds")
    folds = _stratify(y, cfg.n_folds, cfg.order, cfg.seed)
    return _repair(y, folds, cfg.n_folds, cfg)


def balance_table(y: np.ndarray, folds: np.ndarray, n_folds: int) -> pd.DataFrame:
    """Per class: positives, positives per fold, and the largest deviation from the ideal share."""
    counts = np.stack([y[folds == k].sum(0) for k in range(n_folds)], 1)  # (C, K)
    positives = y.sum(0)
    ideal = positives / n_folds
    with np.errstate(divide="ignore", invalid="ignore"):
        deviation = np.where(positives > 0, np.abs(counts / ideal[:, None] - 1).max(1), 0.0)
    table = pd.DataFrame({"class": range(NUM_CLASSES), "name": CLASS_NAMES, "positives": positives})
    for k in range(n_folds):
        table[f"fold_{k}"] = counts[:, k]
    table["max_deviation"] = deviation.round(4)
    return table


@dataclass
class FoldsResult:
    folds: pd.DataFrame  # image_id, fold
    balance: pd.DataFrame  # balance_table
    output: str  # the folds CSV
    balance_csv: str  # OUTPUT_balance.csv (beside it: OUTPUT_config.yaml, the resolved config)


def write_folds(labels_csv: str | Path, output: str | Path, cfg: FoldsConfig) -> FoldsResult:
    """The stage as a library function: image-level folds of the images in `labels_csv`
    (ID,Label) → `output` (image_id,fold; local or a URI), its balance table and resolved config
    beside it. InputError for an unusable labels file."""
    ids, y = read_label_matrix(labels_csv)
    folds = pd.DataFrame({"image_id": ids, "fold": make_folds(y, cfg)})
    output = str(output)
    storage.write_text(output, folds.to_csv(index=False))
    table = balance_table(y, folds.fold.to_numpy(), cfg.n_folds)
    stem = os.path.splitext(output)[0]
    storage.write_text(f"{stem}_balance.csv", table.to_csv(index=False))
    write_resolved(cfg, f"{stem}_config.yaml")
    return FoldsResult(folds, table, output, f"{stem}_balance.csv")


def main(argv: list[str] | None = None) -> int:
    parser = cli.StageParser("hpa_ray.folds", __doc__)
    parser.flag("--labels", required=True)
    parser.out("file", "folds CSV to write (image_id,fold); local or a URI", old=("--output",))
    parser.add_argument("--n-folds", type=int, help="overrides the config's n_folds")
    parser.add_argument("--seed", type=int, help="overrides the config's seed")
    parser.config("conf/folds.yaml", "order=3")
    args = parser.parse(argv)
    overrides = list(args.overrides)
    overrides += [f"n_folds={args.n_folds}"] if args.n_folds is not None else []
    overrides += [f"seed={args.seed}"] if args.seed is not None else []
    return cli.guarded(lambda: _folds_cli(args, overrides))


def _folds_cli(args, overrides: list[str]) -> int:
    cfg = load_config(FoldsConfig, args.config, overrides)
    result = write_folds(args.labels, args.out, cfg)
    table = result.balance
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.to_string(index=False))
    print(f"folds: {len(result.folds)} images in {cfg.n_folds} folds → {result.output}; "
          f"{balance_summary(table, cfg.min_positives)}; balance table → {result.balance_csv}")  # fmt: skip
    return 0


def balance_summary(table: pd.DataFrame, min_positives: int) -> str:
    """The worst deviation from the ideal share over classes with >= min_positives positives,
    or, when no class has that many (a small label file), over the classes present."""
    watched = table[table.positives >= min_positives]
    if len(watched):
        return f"worst deviation over classes with >= {min_positives} positives: {watched.max_deviation.max():.1%}"
    present = table[table.positives > 0]
    if not len(present):
        return "no class has a positive image"
    return (f"no class has {min_positives} positives; worst deviation over the {len(present)} classes present "
            f"(at most {int(present.positives.max())} positives): {present.max_deviation.max():.1%}")  # fmt: skip
