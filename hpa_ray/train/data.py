"""Training input: cells Parquet → fold split → augment → uint8 batches, on Ray Data.

Crops stay uint8 all the way to the worker (4x less to move than float32); normalising (with
the backbone's mean and std, `hpa_ray.train.backbones`) happens on the worker's device (`normalise`).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from ray.data.collate_fn import ArrowBatchCollateFn

from hpa_ray.core import storage
from hpa_ray.core.errors import HpaRayError
from hpa_ray.core.layout import SegmentOutput
from hpa_ray.core.schema import NUM_CLASSES, crops_to_numpy
from hpa_ray.train.augment import flip_batch, resize_crops
from hpa_ray.train.bags import image_bags, image_bags_schema


class DataError(HpaRayError, ValueError):
    """The cells or folds do not fit together (no labels, unknown fold)."""


def read_folds(path: str | Path) -> pd.DataFrame:
    try:
        folds = storage.read_csv(path, dtype={"image_id": str}, keep_default_na=False)  # an ID "NA" stays "NA"
    except FileNotFoundError:
        raise DataError(f"folds file {path} does not exist") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"folds file {path} is empty") from None
    except storage.CsvError as exc:
        raise DataError(f"folds file {exc}") from None
    if not {"image_id", "fold"} <= set(folds.columns):
        raise DataError(f"folds file {path} needs columns image_id,fold; found {list(folds.columns)}")
    if folds.empty:
        raise DataError(f"folds file {path} has a header but no rows")
    if (empty := folds.image_id.str.strip() == "").any():
        raise DataError(f"folds file {path}: row {int(empty.to_numpy().argmax()) + 1} has an empty image_id")
    fold = pd.to_numeric(folds.fold, errors="coerce")
    if (bad := ~np.isfinite(fold) | (fold != fold.round())).any():
        row = int(bad.to_numpy().argmax())
        raise DataError(f"folds file {path}: image {folds.image_id.iloc[row]}: fold '{folds.fold.iloc[row]}' "
                        "is not a whole number")  # fmt: skip
    doubled = folds.image_id[folds.image_id.duplicated()]
    if len(doubled):  # an image in two folds would validate on what it trained on
        raise DataError(f"folds file {path}: image {doubled.iloc[0]} is listed more than once")
    return folds.assign(fold=fold.astype(int))


def image_codes(image_ids) -> np.ndarray:
    """(N,) int64 codes of image IDs, the same in every process (validation groups cells by image)."""
    return np.array([zlib.crc32(str(i).encode()) for i in image_ids], np.int64)


def prepare_batch(table: pa.Table, image_size: int | None, augment: bool,
                  rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """pyarrow batch of cells → {"crop": (N, 4, S, S) uint8, "labels": (N, 19) float32,
    "image": (N,) int64 image codes}; the flips of `augment` drawn from `rng`."""
    crops = crops_to_numpy(table)
    if augment:
        crops = flip_batch(crops, (rng or np.random.default_rng()).random((len(crops), 3)) < 0.5)
    if image_size and image_size != crops.shape[-1]:
        crops = resize_crops(crops, image_size)
    labels = np.asarray(table.column("labels").to_pylist(), np.float32).reshape(-1, NUM_CLASSES)
    return {"crop": np.ascontiguousarray(crops), "labels": labels,
            "image": image_codes(table.column("image_id").to_pylist())}  # fmt: skip


class CellCollate(ArrowBatchCollateFn):
    """In the training worker's prefetch thread: an Arrow batch of cells → torch tensors
    (`prepare_batch`: flips when augmenting, resize). Augmenting here instead of in a Ray Data
    map saves each epoch a round of tasks and object-store copies (docs/lab/benchmarks.md)."""

    def __init__(self, image_size: int | None, augment: bool, seed: tuple[int, ...] | None = None):
        self.image_size, self.augment, self.rng = image_size, augment, np.random.default_rng(seed)

    def __call__(self, batch: pa.Table) -> dict:
        import torch

        prepared = prepare_batch(batch, self.image_size, self.augment, self.rng)
        return {k: torch.from_numpy(v) for k, v in prepared.items()}


def _select(table: pa.Table, image_ids: pa.Array) -> pa.Table:
    keep = pc.and_(pc.is_in(table.column("image_id"), value_set=image_ids), pc.is_valid(table.column("labels")))
    return table.filter(keep)


def check_cells(cells_dir: str) -> int:
    """Every Parquet part under cells_dir opens and holds the training columns, and the first
    part with cells has labels; → the number of parts. DataError naming the first broken part (a
    truncated file would otherwise fail a training worker minutes later, without its name), or
    saying the cells are unlabelled (images segmented without --labels: training on them ran
    with NaN losses to a val_map of 0)."""
    import pyarrow.parquet as pq

    segment_output = SegmentOutput(cells_dir)  # the directory above cells/, given for it
    if storage.is_dir(segment_output.cells) and storage.exists(segment_output.manifest):
        raise DataError(f"{cells_dir} is a segment output: give its cells directory, {segment_output.cells}")
    parts = storage.list_files(cells_dir, "*.parquet", recursive=True)
    if not parts:
        raise DataError(f"no cells (*.parquet) under {cells_dir}: run python -m hpa_ray.segment first")
    fs, _ = storage.resolve(cells_dir)
    labels = None  # of the first part with cells, read while it is open
    for part in parts:
        try:
            with fs.open_input_file(storage.resolve(part.path)[1]) as f:
                file = pq.ParquetFile(f)
                names = file.schema_arrow.names
                if labels is None and "labels" in names and file.metadata.num_rows:
                    labels = file.read(columns=["labels"]).column("labels")
        except (OSError, pa.ArrowInvalid) as exc:
            raise DataError(f"{part.path}: not a readable Parquet file ({exc}); segment again into that "
                            "directory (it redoes the image) or remove the file") from None  # fmt: skip
        missing = {"image_id", "crop", "labels"} - set(names)
        if missing:
            raise DataError(f"{part.path}: no column(s) {sorted(missing)}: not a cells file of hpa_ray.segment")
    if labels is not None and labels.null_count == len(labels):
        raise DataError(f"the cells under {cells_dir} have no labels (their images were segmented without --labels, "
                        "as test images are): segment the training images with --labels (an ID,Label CSV) into a "
                        "new --out, or with --overwrite (a rerun skips the images already done)")  # fmt: skip
    return len(parts)


def check_segment_config(cells_dir: str) -> None:
    """The cells' segment output names how they were made (segment_config.yaml, what predict
    segments test images with); DataError now rather than a run whose models predict cannot use."""
    from hpa_ray.core.config import ConfigError, load_config
    from hpa_ray.segment.config import SegmentConfig

    path = SegmentOutput.of_cells(cells_dir).config
    if not storage.exists(path):
        raise DataError(
            f"{path} is missing: the cells in {cells_dir} do not say how they were segmented, and "
            "predict would not know how to cut test images; make them with python -m hpa_ray.segment"
        )
    try:
        load_config(SegmentConfig, path)
    except ConfigError as exc:
        raise DataError(f"the cells' segment config is not usable: {exc}") from None


TRAINING_COLUMNS = ["image_id", "crop", "labels"]
# Cached cells up to this many crop bytes (all cells under cells_dir) are read by the calling
# process: a Ray Data job per split costs seconds of task start-up (more in a fresh process) for
# data that one pyarrow read takes a fraction of a second over. A fold's process holds two to
# three times its cells while it hands them to the object store: a few folds at once fit a laptop.
IN_PROCESS_MAX_BYTES = 256 * 2**20
BLOCK_BYTES = 16 * 2**20  # cells read in process go to the object store in blocks of about this


def crops_bytes(cells_dir: str) -> int:
    """Bytes of every crop under cells_dir, from the Parquet metadata (nothing is read)."""
    return _crops_bytes(storage.parquet_dataset(cells_dir))


def _crops_bytes(dataset) -> int:
    return dataset.count_rows() * dataset.schema.field("crop").type.byte_width


def fold_datasets(cells_dir: str, folds: pd.DataFrame, fold: int, cache: bool = False, bags: bool = False,
                  seed: int | None = None, in_process_max_bytes: int = IN_PROCESS_MAX_BYTES):  # fmt: skip
    """(train, val) Ray Datasets for one fold: images of `fold` validate, the others train.

    cache: read and split the cells once and keep the fold's crops in the object store (without
    it, each epoch lists, reads and filters the Parquet again). Rows stay cells (image_id, crop,
    labels): the worker's batch collation augments them (`CellCollate`).
    bags: one row per image (`hpa_ray.train.bags.image_bags`); the worker's batch collation draws the
    bags and augments (`hpa_ray.train.bags.collate_bags`).
    seed: the training blocks' order each epoch follows it (None: unseeded).
    in_process_max_bytes: when caching, and all crops under cells_dir come to at most this, this
    process reads and groups them (`IN_PROCESS_MAX_BYTES`), else Ray Data tasks do; the
    datasets hold the same rows either way.
    """
    import ray

    check_fold(folds, fold)
    id_sets = [pa.array(folds.image_id[folds.fold != fold].astype(str).tolist(), pa.string()),
               pa.array(folds.image_id[folds.fold == fold].astype(str).tolist(), pa.string())]  # fmt: skip
    dataset = storage.parquet_dataset(cells_dir) if cache else None
    if cache and _crops_bytes(dataset) <= in_process_max_bytes:
        train, val = (ray.data.from_arrow(blocks) for blocks in _read_here(dataset, id_sets, bags))
    elif bags:
        train, val = _bags_by_ray_data(cells_dir, id_sets, cache)
    else:
        cells = ray.data.read_parquet(cells_dir, columns=TRAINING_COLUMNS)
        train, val = (_read_by_ray_data(cells, ids, cache) for ids in id_sets)
    # Training blocks in a new order each epoch (the workers' shuffle buffer mixes within).
    return train.randomize_block_order(seed=seed), val


def check_fold(folds: pd.DataFrame, fold: int) -> None:
    """DataError when `fold` is not one of the folds file's."""
    if fold not in set(folds.fold):
        raise DataError(f"fold {fold} is not in the folds file (folds: {sorted(set(folds.fold))})")


def _read_by_ray_data(cells, image_ids: pa.Array, cache: bool):
    ds = cells.map_batches(_select, fn_kwargs={"image_ids": image_ids}, batch_format="pyarrow")
    return ds.materialize() if cache else ds


def _bags_by_ray_data(cells_dir: str, id_sets: list[pa.Array], cache: bool) -> list:
    """Each id set's bags (`image_bags` rows), grouped by Ray Data tasks.

    The segment stage writes all of an image's cells into one Parquet part, so a task per part
    reads it and bags its images: no shuffle of the crops across the cluster (a groupby moves
    every crop through the object store, once per epoch when not cached), and a task holds one
    part. A cells directory with an image spread over parts (not written by `segment`) is
    grouped by Ray Data's groupby instead.
    """
    import ray

    if images_spread_over_parts(cells_dir):
        cells = ray.data.read_parquet(cells_dir, columns=TRAINING_COLUMNS)
        bags = (_read_by_ray_data(cells, ids, cache=False).groupby("image_id").map_groups(
            image_bags, batch_format="pyarrow") for ids in id_sets)  # fmt: skip
    else:
        files = [entry.path for entry in storage.list_files(cells_dir, "*.parquet", recursive=True)]
        paths = ray.data.from_items([{"path": path} for path in files], override_num_blocks=max(len(files), 1))
        bags = (paths.map_batches(_part_bags, fn_kwargs={"image_ids": ids}, batch_size=None, batch_format="pyarrow")
                for ids in id_sets)  # fmt: skip
    return [ds.materialize() if cache else ds for ds in bags]


def _part_bags(paths: pa.Table, image_ids: pa.Array) -> pa.Table:
    """paths: a column of Parquet part paths → the `image_bags` rows of their images in image_ids
    (part by part: an image's cells are in one part)."""
    return pa.concat_tables([_bags_of(_select(storage.parquet_dataset(path).to_table(columns=TRAINING_COLUMNS),
                                              image_ids)) for path in paths.column("path").to_pylist()])  # fmt: skip


def images_spread_over_parts(cells_dir: str) -> int:
    """How many images have cells in more than one Parquet part under cells_dir (only the
    image_id columns are read)."""
    parts = storage.parquet_dataset(cells_dir).to_table(columns=["image_id", "__filename"]).to_pandas()
    return int((parts.groupby("image_id", observed=True)["__filename"].nunique() > 1).sum())


def _read_here(dataset, id_sets: list[pa.Array], bags: bool) -> list[list[pa.Table]]:
    """Each id set's cells (bags: one `image_bags` row per image) as blocks of about BLOCK_BYTES;
    every Parquet part of the pyarrow `dataset` is read once, by this process."""
    parts = [part.to_table(columns=TRAINING_COLUMNS) for part in dataset.get_fragments()]
    empty = dataset.schema.empty_table().select(TRAINING_COLUMNS)
    out = []
    for ids in id_sets:
        cells = pa.concat_tables([empty, *(_select(part, ids) for part in parts)])
        out.append(_blocks(_bags_of(cells) if bags else cells))
    return out


def _bags_of(cells: pa.Table) -> pa.Table:
    """Cells (image_id, crop, labels) → one `image_bags` row per image, cells in their order."""
    cells = cells.take(pc.sort_indices(cells, [("image_id", "ascending")]))  # a stable sort
    ids = cells.column("image_id").to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.array([], int)
    ends = np.r_[starts[1:], len(ids)]
    bags = [image_bags(cells.slice(a, b - a)) for a, b in zip(starts, ends)]
    return pa.concat_tables([image_bags_schema(cells.schema).empty_table(), *bags])


def _blocks(table: pa.Table) -> list[pa.Table]:
    n = max(1, min(table.num_rows, -(-table.nbytes // BLOCK_BYTES)))
    bounds = np.linspace(0, table.num_rows, n + 1).astype(int)
    return [table.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:])]


def normalise(crops, mean, std):
    """(B, 4, S, S) uint8 tensor → float, per-channel (x/255 - mean) / std, on its device."""
    return (crops.float() / 255 - mean) / std
