"""The Kaggle submission: write it, read it, check it (`python -m hpa_ray.predict.submission validate`).

One row per image: `ID,ImageWidth,ImageHeight,PredictionString`; the string repeats
`label confidence mask` for every cell and class kept, the mask being the cell's full-image
mask in the encoding of hpa_ray.core.masks (COCO RLE, zlib, base64).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hpa_ray.core import storage
from hpa_ray.core.errors import HpaRayError
from hpa_ray.core.masks import MAX_SIDE, check_mask
from hpa_ray.core.schema import NUM_CLASSES

HEADER = ("ID", "ImageWidth", "ImageHeight", "PredictionString")


class SubmissionError(HpaRayError, ValueError):
    """A submission file that breaks the format; the message names the row and triple."""


class SubmissionInputError(SubmissionError):
    """No submission to check: the file is missing or unreadable (exit status 2, not 1)."""


def prediction_string(
    masks: list[str], probs: np.ndarray, min_confidence: float = 0.0, top_k: int = NUM_CLASSES
) -> str:
    """Cells' masks and (N, NUM_CLASSES) float probabilities → `label conf mask ...`.

    Per cell, the `top_k` most confident classes whose confidence is >= min_confidence.
    """
    probs = np.asarray(probs, dtype=np.float64).reshape(len(masks), NUM_CLASSES)
    parts = []
    for mask, row in zip(masks, probs):
        for label in np.argsort(-row, kind="stable")[:top_k]:
            if row[label] >= min_confidence:
                parts.append(f"{label} {row[label]:.5f} {mask}")
    return " ".join(parts)


def write_submission(rows: pd.DataFrame, path: str | Path) -> str | Path:
    """rows: columns ID, ImageWidth, ImageHeight, PredictionString (in the order to write)."""
    out = rows.loc[:, list(HEADER)].copy()
    out["PredictionString"] = out["PredictionString"].fillna("")
    storage.write_text(path, out.to_csv(index=False))  # whole or not at all
    return path


def read_submission(path: str | Path) -> pd.DataFrame:
    """The file as strings, header checked; SubmissionError when it is not a submission."""
    try:
        text = storage.read_text(path)
    except FileNotFoundError:
        raise SubmissionInputError(f"submission {path} does not exist") from None
    except UnicodeDecodeError:
        hint = storage.encoding_hint(path)
        raise SubmissionInputError(f"submission {path} is not UTF-8 text{hint}; a submission is a UTF-8 CSV") from None
    except OSError as exc:  # a directory, unreadable, storage unreachable
        raise SubmissionInputError(f"cannot read submission {path}: {exc}") from None
    header = next(csv.reader(io.StringIO(text)), None)
    if header is None:
        raise SubmissionError(f"{path}: empty file")
    if tuple(header) != HEADER:
        raise SubmissionError(f"{path}: header must be {','.join(HEADER)}; found {','.join(header)}")
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except pd.errors.ParserError as exc:
        raise SubmissionError(f"{path} {storage.csv_problem(exc)}") from None


def parse_triples(text: str) -> list[tuple[str, str, str]]:
    """`label conf mask ...` → [(label, conf, mask), ...] as strings; ValueError if not triples."""
    tokens = text.split()
    if len(tokens) % 3:
        raise ValueError(f"{len(tokens)} tokens do not make label-confidence-mask triples")
    return [tuple(tokens[i : i + 3]) for i in range(0, len(tokens), 3)]


def _size(row: pd.Series, where: str) -> tuple[int, int]:
    try:
        width, height = int(row.ImageWidth), int(row.ImageHeight)
    except ValueError:
        raise SubmissionError(
            f"{where}: ImageWidth/ImageHeight {row.ImageWidth!r}/{row.ImageHeight!r} are not integers"
        ) from None
    if not (0 <= width <= MAX_SIDE and 0 <= height <= MAX_SIDE):
        raise SubmissionError(f"{where}: image size {width}x{height} is outside 0-{MAX_SIDE} px per side")
    return width, height


def _check_triple(triple: tuple[str, str, str], width: int, height: int, decoded: dict) -> str | None:
    label, conf, mask = triple
    if not (label.isascii() and label.isdigit()) or int(label) >= NUM_CLASSES:
        return f"label {label!r} is not an integer 0-{NUM_CLASSES - 1}"
    try:
        value = float(conf)
    except ValueError:
        return f"confidence {conf!r} is not a number"
    if not 0.0 <= value <= 1.0:
        return f"confidence {conf} is outside [0, 1]"
    if mask not in decoded:  # a cell's mask repeats once per class kept: check it once
        try:
            check_mask(mask, height, width)
            decoded[mask] = None
        except ValueError as exc:
            decoded[mask] = str(exc)
    return decoded[mask]


def _check_row(i: int, row: pd.Series) -> int:
    where = f"row {i + 2} (ID {row.ID!r})"  # +2: 1-based, after the header
    if not row.ID:
        raise SubmissionError(f"row {i + 2}: empty ID")
    width, height = _size(row, where)
    try:
        triples = parse_triples(row.PredictionString)
    except ValueError as exc:
        raise SubmissionError(f"{where}: {exc}") from None
    if triples and (width == 0 or height == 0):
        raise SubmissionError(f"{where}: predictions for an image of size {width}x{height}")
    decoded: dict = {}
    for k, triple in enumerate(triples):
        if problem := _check_triple(triple, width, height, decoded):
            raise SubmissionError(f"{where}, triple {k + 1}: {problem}")
    return len(triples)


@dataclass
class SubmissionSummary:
    rows: int  # images
    triples: int  # label-confidence-mask predictions
    empty_rows: int  # images without any prediction


def validate_submission(path: str | Path, images_dir: str | Path | None = None) -> SubmissionSummary:
    """Check every row and triple; with images_dir, sizes against the images and one row each.

    Raises SubmissionError at the first problem, naming the row (file line) and triple.
    """
    table = read_submission(path)
    duplicated = table.ID[table.ID.duplicated()]
    if len(duplicated):
        raise SubmissionError(f"{path}: ID {duplicated.iloc[0]!r} has more than one row")
    counts = [_check_row(i, row) for i, row in enumerate(table.itertuples(index=False))]
    if images_dir is not None:
        _check_against_images(table, str(images_dir))
    return SubmissionSummary(len(table), int(sum(counts)), int(sum(c == 0 for c in counts)))


def _check_against_images(table: pd.DataFrame, images_dir: str) -> None:
    from hpa_ray.core.images import ImageError, InputError, list_images, read_channel

    try:
        listing = list_images(images_dir)
    except InputError as exc:
        raise SubmissionInputError(str(exc)) from None
    ids = set(table.ID)
    missing = [j["image_id"] for j in listing.jobs if j["image_id"] not in ids]
    if missing:
        raise SubmissionError(f"{len(missing)} image(s) in {images_dir} have no row, e.g. {missing[0]!r}")
    rows = table.set_index("ID")
    for job in listing.jobs:
        try:
            height, width = read_channel(job["paths"][0]).shape[:2]
        except ImageError:  # a broken image: its row may only state the expected size
            continue
        row = rows.loc[job["image_id"]]
        if (int(row.ImageWidth), int(row.ImageHeight)) != (width, height):
            raise SubmissionError(
                f"ID {job['image_id']!r}: stated size {row.ImageWidth}x{row.ImageHeight}, image is {width}x{height}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpa_ray.predict.submission", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("validate", help="check a submission file (exit 0 valid, 1 invalid, 2 unreadable)")
    check.add_argument("file", help="submission CSV")
    check.add_argument("--images", help="image directory: check sizes, and that every image has a row")
    args = parser.parse_args(argv)
    try:
        summary = validate_submission(args.file, args.images)
    except SubmissionInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SubmissionError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 1
    print(f"valid: {summary.rows} rows, {summary.triples} predictions, {summary.empty_rows} rows without any")
    return 0


if __name__ == "__main__":
    sys.exit(main())
