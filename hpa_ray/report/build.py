"""Pictures of a run's inputs and outputs, and one index.html that shows them (`python -m hpa_ray.report`).

Each part appears when its input is given: labels (a labels CSV), rare-class cells and
segmentation (a segment output directory), folds, training (a train run directory), search (a
tune run directory), evaluation (a truth Parquet and a submission), and the predictions view (a
submission and its images: predictions.html, linked from index.html; `hpa_ray.report.predictions`).
Headless: matplotlib's Agg, no notebook, no server.
The inputs may be local or object storage (`s3://…`); the page and its PNGs are written locally.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from hpa_ray.core import storage
from hpa_ray.core.layout import SegmentOutput, fold_given_for_run
from hpa_ray.core.masks import label_image
from hpa_ray.core.schema import CLASS_NAMES, NUM_CLASSES
from hpa_ray.report import figures as figs
from hpa_ray.report.page import Section, write_page
from hpa_ray.runtime import cli

EXAMPLES_PER_CLASS = 6  # cells shown per rare class
RARE_CLASSES = 6  # the rarest classes (by images) that have cells
OUTLINED_IMAGES = 3  # images drawn with their cell outlines
PREDICTIONS_PAGE = "predictions.html"  # the predictions view, linked from index.html


def _labels(labels_csv: str, out: Path) -> Section:
    from hpa_ray.folds.stratify import read_label_matrix

    _, y = read_label_matrix(labels_csv)
    name = storage.name(labels_csv)
    return Section("Labels", [
        (figs.images_per_class(y, out / "labels_per_class.png"), f"Images per class in {name}."),
        (figs.cooccurrence(y, out / "labels_cooccurrence.png"),
         "Label co-occurrence, normalised by row: of the images with the row's class, the share that also has the "
         "column's."),
        (figs.labels_per_image(y, out / "labels_per_image.png"), "How many labels an image carries."),
    ])  # fmt: skip


def _rare_cells(cells_dir: str, out: Path) -> Section | None:
    from hpa_ray.core.schema import crops_to_numpy

    dataset = storage.parquet_dataset(cells_dir)
    labels = dataset.to_table(columns=["labels"]).column("labels").to_pylist()
    rows = [i for i, v in enumerate(labels) if v is not None]
    if not rows:
        return None
    y = np.asarray([labels[i] for i in rows], np.uint8)
    present = [c for c in np.argsort(y.sum(0), kind="stable") if y[:, c].sum() > 0][:RARE_CLASSES]
    picks = {int(c): [rows[i] for i in np.flatnonzero(y[:, c])[:EXAMPLES_PER_CLASS]] for c in present}
    wanted = sorted({i for v in picks.values() for i in v})
    crops = crops_to_numpy(dataset.take(wanted, columns=["crop"]))
    position = {row: k for k, row in enumerate(wanted)}
    examples = {c: crops[[position[i] for i in v]] for c, v in picks.items()}
    path = figs.example_cells(examples, out / "rare_class_cells.png")
    return Section("Rare classes", [(path, f"Example cells of the {len(picks)} rarest labelled classes in the cells "
                                           "(cells inherit their image's labels).")])  # fmt: skip


def _input_paths(segment_dir: str) -> dict[str, list[str]]:
    """image ID → channel files, from the directory the segmentation read (when still there)."""
    from hpa_ray.core.images import list_images

    inputs = SegmentOutput(segment_dir).inputs
    if not storage.exists(inputs):
        return {}
    input_dir = json.loads(storage.read_text(inputs))["input_dir"]
    return {j["image_id"]: j["paths"] for j in list_images(input_dir).jobs} if storage.is_dir(input_dir) else {}


def _read_or_none(paths: list[str] | None) -> np.ndarray | None:
    from hpa_ray.core.images import read_image

    try:
        return read_image(paths) if paths else None
    except ValueError:
        return None


def _segmentation(segment_dir: str, out: Path) -> Section:
    import pyarrow.compute as pc

    manifest = storage.read_parquet(SegmentOutput(segment_dir).manifest)
    section = Section("Segmentation")
    shown = manifest[(manifest.status == "ok") & (manifest.n_cells > 0)].head(OUTLINED_IMAGES)
    dataset = storage.parquet_dataset(storage.join(segment_dir, "cells"))
    paths = _input_paths(segment_dir) if len(shown) else {}
    for row in shown.itertuples():
        cells = dataset.to_table(columns=["mask_rle"], filter=pc.field("image_id") == row.image_id)
        labels = label_image(cells.column("mask_rle").to_pylist(), row.image_height, row.image_width)
        image = _read_or_none(paths.get(row.image_id))
        path = figs.outlines(
            image, labels, f"{row.image_id}: {row.n_cells} cells", out / f"outlines_{len(section.figures)}.png"
        )
        over = "over the image" if image is not None else "(the image itself was not found: cells coloured)"
        section.figures.append((path, f"{row.image_id}: cell outlines {over}."))
    section.figures.append((figs.cells_per_image(manifest.n_cells.to_numpy(), out / "cells_per_image.png"),
                            "Cells found per image."))  # fmt: skip
    section.html = _error_table(manifest)
    return section


def _error_table(manifest: pd.DataFrame) -> str:
    failed = manifest[manifest.status != "ok"]
    if failed.empty:
        return f"<p>All {len(manifest)} images segmented without error.</p>"
    rows = "".join(
        f"<tr><td>{html.escape(r.image_id)}</td><td>{html.escape(r.error)}</td></tr>" for r in failed.itertuples()
    )
    head = "<tr><th>image</th><th>error</th></tr>"
    return f"<p>{len(failed)} of {len(manifest)} images failed:</p><table>{head}{rows}</table>"


def _folds(folds_csv: str, labels_csv: str | None, out: Path) -> Section:
    from hpa_ray.folds.stratify import balance_table, read_label_matrix

    folds = storage.read_csv(folds_csv, dtype={"image_id": str})
    beside = os.path.splitext(folds_csv)[0] + "_balance.csv"
    if labels_csv is not None:
        ids, y = read_label_matrix(labels_csv)
        fold_of = folds.set_index("image_id").fold.reindex(ids)
        known = fold_of.notna().to_numpy()
        if not known.any():
            raise ValueError(f"{folds_csv} and {labels_csv} have no image in common")
        n_folds = int(folds.fold.max()) + 1
        table = balance_table(y[known], fold_of[known].astype(int).to_numpy(), n_folds)
    elif storage.exists(beside):
        table = storage.read_csv(beside)
    else:
        raise ValueError(f"the folds part needs --labels or {beside}")
    per_fold = table[[c for c in table.columns if c.startswith("fold_")]]
    per_fold.columns = [c.removeprefix("fold_") for c in per_fold.columns]
    path = figs.positives_per_fold(per_fold, out / "folds_positives.png")
    worst = table.max_deviation.max() if "max_deviation" in table else float("nan")
    caption = (f"Positive images per class and fold ({storage.name(folds_csv)}); largest deviation from the ideal "
               f"share: {worst:.1%}.")  # fmt: skip
    return Section("Folds", [(path, caption)])


def _fold_metrics(run_dir: str) -> list:
    return storage.list_files(run_dir, "fold-*/metrics.csv", recursive=True)


def _training(found: list, out: Path) -> Section:
    """found: the run's fold-K/metrics.csv entries (`_fold_metrics`)."""
    metrics = {int(e.relative.split("/")[0].removeprefix("fold-")): storage.read_csv(e.path) for e in found}
    best = {f"fold {k}": t.loc[t.val_map.idxmax(), [f"ap_{c}" for c in range(NUM_CLASSES)]].to_numpy(float)
            for k, t in metrics.items()}  # fmt: skip
    ap = pd.DataFrame(best, index=range(NUM_CLASSES))
    return Section("Training", [
        (figs.training_curves(metrics, out / "training_curves.png"),
         "Loss and validation macro AP per epoch, per fold."),
        (figs.per_class_ap(ap, "Validation AP per class at each fold's best epoch", out / "training_class_ap.png"),
         "Per-class validation AP (cells against their images' labels) at each fold's best epoch."),
    ])  # fmt: skip


def _evaluation(truth: str, submission: str, out: Path) -> Section:
    from hpa_ray.evaluate.score import evaluate_files

    scores = evaluate_files(submission, truth)
    series = {"submission": [scores["per_class_ap"][n] for n in CLASS_NAMES]}
    evaluation = storage.join(storage.parent(submission), "evaluation.json")
    if storage.exists(evaluation) and "prior_per_class_ap" in (saved := json.loads(storage.read_text(evaluation))):
        series["prior-only answer"] = [saved["prior_per_class_ap"][n] for n in CLASS_NAMES]
    ap = pd.DataFrame(series, index=range(NUM_CLASSES)).astype(float)
    path = figs.per_class_ap(
        ap, f"Per-class AP of {storage.name(submission)}: mAP {scores['mAP']:.3f}", out / "evaluation_ap.png"
    )
    caption = (f"The task's metric per class (IoU ≥ 0.6) against {storage.name(truth)}; classes without true cells are "
               f"empty. mAP {scores['mAP']:.4f}.")  # fmt: skip
    return Section("Evaluation", [(path, caption)])


def run_report(out, labels=None, segment_dir=None, folds=None, run_dir=None, truth=None, submission=None,
               search_dir=None, images=None) -> Path:  # fmt: skip
    """Write the figures for the inputs given and out/index.html; returns its path.

    Whole or not at all: the pages and figures are drawn in a scratch directory inside `out` and
    moved in when every part has been drawn, so an input found unusable halfway (labels and folds
    that share no image) leaves `out`, and a report already there, as they were."""
    fold_metrics = _fold_metrics(str(run_dir)) if run_dir else []
    if run_dir and not fold_metrics:  # said before anything is drawn
        if problem := fold_given_for_run(str(run_dir)):
            raise ValueError(f"--run-dir {problem}")
        raise ValueError(f"--run-dir {run_dir}: no fold-K/metrics.csv (a directory written by python -m hpa_ray.train)")
    out = Path(out)
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=".report-", dir=out) as scratch:
            index = _draw(Path(scratch), labels, segment_dir, folds, run_dir, fold_metrics, truth, submission,
                          search_dir, images)  # fmt: skip
            for drawn in sorted(Path(scratch).iterdir(), key=lambda f: f.name == index.name):  # index.html last
                os.replace(drawn, out / drawn.name)
    except BaseException:
        if made:
            with contextlib.suppress(OSError):  # empty again unless another process wrote there
                out.rmdir()
        raise
    return out / index.name


def _draw(out: Path, labels, segment_dir, folds, run_dir, fold_metrics, truth, submission, search_dir,
          images) -> Path:  # fmt: skip
    sections: list[Section | None] = []
    if labels:
        sections.append(_labels(str(labels), out))
    if segment_dir:
        sections += [_rare_cells(storage.join(segment_dir, "cells"), out), _segmentation(str(segment_dir), out)]
    if folds:
        sections.append(_folds(str(folds), str(labels) if labels else None, out))
    if run_dir:
        sections.append(_training(fold_metrics, out))
    if search_dir:
        from hpa_ray.report.search import search_section

        sections.append(search_section(str(search_dir), out))
    if truth and submission:
        sections.append(_evaluation(str(truth), str(submission), out))
    if images and submission:
        sections.append(_predictions(str(submission), str(images), out, str(truth) if truth else None))
    return write_page([s for s in sections if s is not None], out)


def _predictions(submission: str, images: str, out: Path, truth: str | None) -> Section:
    """The predictions view on a page of its own (its figures are many and large), linked here."""
    from hpa_ray.report.predictions import predictions_view

    figures, summary = predictions_view(submission, images, out, truth)
    page = write_page([Section("Predictions", figures, summary)], out, PREDICTIONS_PAGE, "hpa_ray predictions")
    return Section("Predictions", html=f'<p><a href="{page.name}">The predictions view</a>: the test images with '
                   "every cell outlined in its top class's colour and its confidence, and per class the most "
                   f"confident cells{' beside the truth' if truth else ''}.</p>{summary}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = cli.StageParser("hpa_ray.report", __doc__)
    parser.out("dir", "where the PNGs and index.html go")
    parser.flag("--labels", help="labels CSV (ID,Label), e.g. ../shared/data/train.csv")
    parser.add_argument("--segment-dir", help="a segment output directory (cells/, images.parquet)")
    parser.flag("--folds", help="folds CSV (image_id,fold); per-class counts need --labels or its _balance.csv")
    parser.flag("--run-dir", help="a training run directory (fold-K/metrics.csv)")
    parser.add_argument("--submission", help="submission CSV: evaluated with --truth, drawn with --images")
    parser.add_argument(
        "--truth",
        help="per-cell truth Parquet (with --submission): the evaluation, and the truth beside the predictions",
    )
    parser.flag(
        "--images",
        help="the images the submission predicts (with --submission): the predictions view, predictions.html",
    )
    parser.add_argument("--search-dir", help="a tune run directory (trials.csv, trials/): curves, parameters, best")
    args = parser.parse(argv)
    if bool(args.truth or args.images) != bool(args.submission):
        parser.error("--submission goes with --truth (its evaluation) or --images (its predictions view), or both")
    return cli.guarded(lambda: _report_cli(args), also=(OSError, ValueError))


def _report_cli(args) -> int:
    index = run_report(args.out, args.labels, args.segment_dir, args.folds, args.run_dir, args.truth,
                       args.submission, args.search_dir, args.images)  # fmt: skip
    print(f"report: {index}")
    if args.images:
        print(f"predictions view: {index.parent / PREDICTIONS_PAGE}")
    return 0
