"""Find the input images of a run and decode them, with a reason for every refusal.

Layout (Kaggle's): DIR/{ID}_{red,green,blue,yellow}.{png,tif,tiff,jpg,jpeg}, plus an optional
labels CSV `ID,Label`; DIR and the CSV may be local or object storage (hpa_ray.core.storage).
Nothing here raises for one bad image: it is reported and skipped.
"""

from __future__ import annotations

import io
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from hpa_ray.core import storage
from hpa_ray.core.errors import HpaRayError
from hpa_ray.core.schema import CHANNELS, IMAGE_EXTENSIONS, IMAGE_FILES, check_image_id, format_labels, parse_labels

log = logging.getLogger(__name__)

_FILE_RE = re.compile(r"^(?P<id>.+)_(?P<ch>red|green|blue|yellow)(?P<ext>\.[A-Za-z]+)$")
# Where a colour channel file holds its signal, in cv2's BGR order: the HPA website's per-channel
# JPEGs are drawn in their channel's own colour (yellow: red + green).
_OWN_COLOUR = {"red": [2], "green": [1], "blue": [0], "yellow": [2, 1]}


class InputError(HpaRayError, ValueError):
    """The run's inputs as a whole are unusable (no images, a CSV without its columns)."""


class ImageError(HpaRayError, ValueError):
    """One image cannot be used; the message says why, for the manifest."""


@dataclass
class Listing:
    jobs: list[dict]  # {image_id, paths (CHANNELS order), labels_text} per usable image
    refused: list[dict] = field(default_factory=list)  # {image_id, error} per refused image
    unlisted: int = 0  # images in the directory that the labels CSV does not name


def read_id_csv(path: str | Path, what: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """A CSV of image IDs (a labels or IDs file) as strings, the spaces around its names and
    values taken off (a hand-edited `ID, Label` or `abc ,0|5` names the same image as Kaggle's
    own files; IDs never hold them). InputError, naming `what` file, when it is missing or empty
    or lacks one of `columns`."""
    try:
        df = storage.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise InputError(f"{what} file {path} does not exist") from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{what} file {path} is empty") from None
    except storage.CsvError as exc:
        raise InputError(f"{what} file {exc}") from None
    df.columns = [str(name).strip() for name in df.columns]
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"{what} file {path} lacks column(s) {missing}; found {list(df.columns)}"
                         f"{_columns_hint(missing, list(df.columns))}")  # fmt: skip
    return df.apply(lambda column: column.str.strip())


def _columns_hint(missing: list[str], found: list[str]) -> str:
    """Why a labels or IDs file's columns may be the wrong ones, where it can be told."""
    if {"Id", "Target"} <= set(found):
        return " (Id,Target is the 2018 HPA competition's format: 28 classes, not this task's 19)"
    spelt = {name.lower(): name for name in found}
    renames = [f"{spelt[c.lower()]} to {c}" for c in missing if c.lower() in spelt]
    return f" (names are case-sensitive: rename {', '.join(renames)})" if renames else ""


def read_labels_csv(path: str | Path) -> pd.DataFrame:
    """Read `ID,Label` as strings; InputError when the file is empty or lacks a column."""
    df = read_id_csv(path, "labels", ("ID", "Label"))
    if df.empty:
        raise InputError(f"labels file {path} has a header but no rows")
    return df


def _scan(input_dir: str) -> dict[str, dict[str, list[str]]]:
    """image ID → channel → file paths (one listing call, also on object storage)."""
    found: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for entry in storage.list_files(input_dir):
        m = _FILE_RE.match(entry.relative)
        if m and m["ext"].lower() in IMAGE_EXTENSIONS:
            found[m["id"]][m["ch"]].append(entry.path)
    return found


def _channel_paths(image_id: str, files: dict[str, list[str]], input_dir: str) -> list[str]:
    missing = [c for c in CHANNELS if not files.get(c)]
    if len(missing) == len(CHANNELS):  # listed in the labels CSV, not in the directory
        raise ImageError(f"no image files for this ID in {input_dir}")
    if missing:
        raise ImageError(f"missing channel file(s) {missing} for {image_id}")
    doubled = {c: [storage.name(p) for p in files[c]] for c in CHANNELS if len(files[c]) > 1}
    if doubled:
        raise ImageError(f"more than one file for a channel: {doubled}")
    return [files[c][0] for c in CHANNELS]


def _check_repeats(image_id: str, labels: str, texts, labels_csv, lines: list[int]) -> None:
    """An ID listed more than once: the same labels each time is one image (a warning); other
    labels are a contradiction the image is refused for (ImageError)."""
    try:
        same = all(format_labels(parse_labels(t)) == labels for t in texts)
    except ValueError as exc:
        raise ImageError(f"{labels_csv}: ID listed on lines {lines}, one with bad labels: {exc}") from None
    if not same:
        raise ImageError(f"ID appears {len(lines)} times in {labels_csv} with different labels (lines {lines})")
    log.warning("%s: ID %s is listed %d times with the same labels (lines %s); run once",
                labels_csv, image_id, len(lines), lines)  # fmt: skip


def list_images(input_dir: str | Path, labels_csv: str | Path | None = None) -> Listing:
    """Match image files to IDs (from the CSV when given, else from the directory)."""
    input_dir = str(input_dir)
    if not storage.is_dir(input_dir):
        what = "is a file, not a directory" if storage.is_file(input_dir) else "does not exist"
        raise InputError(f"image directory {input_dir} {what}")
    found = _scan(input_dir)
    if labels_csv is None:
        entries = [(image_id, "", [0]) for image_id in sorted(found)]
    else:
        df = read_labels_csv(labels_csv)
        rows = defaultdict(list)
        for i, image_id in enumerate(df["ID"]):
            rows[image_id].append(i + 2)  # file line numbers, header is line 1 (IDs stripped on reading)
        entries = [(image_id, df["Label"].iloc[lines[0] - 2], lines) for image_id, lines in rows.items()]
    if not entries:
        raise InputError(f"no images in {input_dir} (expected {IMAGE_FILES})")
    listing = Listing(jobs=[])
    for image_id, label_text, lines in entries:
        try:
            if reason := check_image_id(image_id):
                raise ImageError(f"refused: {reason}")
            labels = format_labels(parse_labels(label_text)) if labels_csv is not None else ""
            if len(lines) > 1:
                _check_repeats(image_id, labels, df["Label"].iloc[[n - 2 for n in lines]], labels_csv, lines)
            paths = _channel_paths(image_id, found.get(image_id, {}), input_dir)
        except ImageError as exc:
            listing.refused.append({"image_id": image_id, "error": str(exc)})
            continue
        except ValueError as exc:  # parse_labels
            listing.refused.append({"image_id": image_id, "error": f"{labels_csv} line {lines[0]}: {exc}"})
            continue
        listing.jobs.append({"image_id": image_id, "paths": paths, "labels_text": labels})
    if labels_csv is not None:
        listing.unlisted = len(set(found) - {e[0] for e in entries})
    return listing


def _explain(data: bytes) -> str:
    """Why cv2 could not decode a file's bytes (PIL's words are clearer, except where it does
    not know the format: its message then names only an in-memory buffer)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except UnidentifiedImageError:
        start = f"{len(data):,} bytes starting {data[:8]!r}"
        return f"not an image format that can be read ({start}; expected PNG, TIFF or JPEG)"
    except Exception as exc:  # noqa: BLE001 - any reason is the answer
        return str(exc) or type(exc).__name__
    return "the decoder returned nothing"


def to_uint8(channel: np.ndarray, bits: int = 16) -> np.ndarray:
    """uint8 as is; uint16 holding `bits`-bit data scaled to 8 bits (2**bits - 1 → 255, rounded;
    brighter pixels saturate)."""
    if channel.dtype == np.uint8:
        return channel
    if channel.dtype == np.uint16:
        top = 2**bits - 1
        return np.minimum((channel.astype(np.uint32) * 255 + top // 2) // top, 255).astype(np.uint8)
    raise ImageError(f"unsupported pixel type {channel.dtype} (expected 8- or 16-bit)")


def bit_depth(channels: list[np.ndarray]) -> int:
    """The bits a 16-bit image's data use: its brightest pixel over all the channels given, rounded
    up to a camera's depth (8, 10, 12, 14 or 16). A 12-bit camera's image in a 16-bit file is
    scaled by 4095, not 65535, which would leave it 16 grey levels (F1 0.70 instead of 0.95 on the
    four real images, and no cell at all from 10-bit data: docs/lab/quality.md). One depth for all
    four channels keeps their relative brightness; across images it follows each one's peak (a
    12-bit image whose peak is under 2048 reads 4x brighter): `input_bits` fixes it for a set."""
    peak = max((int(c.max()) for c in channels if c.size), default=0)
    bits = max(8, peak.bit_length())
    return min(16, bits + bits % 2)


def _decode_channel(path: str) -> np.ndarray:
    """One channel file (local or object storage) → (H, W) uint8 or uint16 as stored (a colour
    file: `_grey`); ImageError says what is wrong with it."""
    name = storage.name(path)
    try:
        encoded = storage.read_bytes(path)
    except OSError as exc:  # gone since the listing, unreadable, storage unreachable
        raise ImageError(f"cannot read {name}: {exc}") from None
    if not encoded:
        raise ImageError(f"cannot decode {name}: the file is empty (0 bytes)")
    data = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise ImageError(f"cannot decode {name}: {_explain(encoded)}")
    if data.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"{name}: unsupported pixel type {data.dtype} (expected 8- or 16-bit)")
    return _grey(data, name)


def _grey(data: np.ndarray, name: str) -> np.ndarray:
    """(H, W) as is; a colour file (H, W, 3 or 4; BGR(A)) → (H, W), the brightest of its channel's
    own colour components. A greyscale saved as colour reads the same; a file with no signal in
    its channel's colour (another channel saved under this name) is refused."""
    if data.ndim == 2:
        return data
    found = _FILE_RE.match(name)
    if found is None or data.shape[2] not in (3, 4):
        raise ImageError(f"{name} has {data.shape[2]} colour channels; expected one grayscale channel")
    channel = found["ch"]
    own = data[..., _OWN_COLOUR[channel]].max(axis=2)
    if not own.any() and data[..., :3].any():
        raise ImageError(f"{name} is a colour image with no {channel} in it; a {channel} channel file holds "
                         f"grayscale or {channel}")  # fmt: skip
    return own


def read_channel(path: str) -> np.ndarray:
    """One channel file → (H, W) uint8 (16-bit: scaled from this channel's own
    `bit_depth`, which may differ from its image's in `read_image`); ImageError says what is
    wrong with it."""
    data = _decode_channel(path)
    return to_uint8(data, bit_depth([data]))


def read_image(paths: list[str], bits: int | str = "auto") -> np.ndarray:
    """Channel files in CHANNELS order → (4, H, W) uint8; ImageError when sizes differ.
    16-bit channels are scaled from `bits` (brighter pixels saturate), or with "auto" from the
    image's `bit_depth` (one for all its channels)."""
    channels = [_decode_channel(p) for p in paths]
    shapes = {c.shape for c in channels}
    if len(shapes) > 1:
        sizes = ", ".join(f"{n} {c.shape[1]}x{c.shape[0]}" for n, c in zip(CHANNELS, channels))
        raise ImageError(f"channel sizes differ: {sizes}")
    if bits == "auto":
        bits = bit_depth([c for c in channels if c.dtype == np.uint16])
    return np.stack([to_uint8(c, bits) for c in channels])
