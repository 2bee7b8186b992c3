"""Bags: an image's cells, taken together (the `bag` training method).

Cells stay one row per cell in Parquet; a bag is only a step of the training input: a fold's
cells are grouped by image (`image_bags`: one row per image; by Ray Data, or by the fold's own
process when they are few, `train_data.fold_datasets`), and the workers' batch
collation (`collate_bags`) draws each bag's cells (`sample_bags`), pads and masks them.
"""

from __future__ import annotations

import numpy as np


def sample_bags(members: list[np.ndarray], bag_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """members: per bag, the indices of its cells (at least one) → index (B, K) int64 and
    mask (B, K) bool, K = bag_size. A bag with more than K cells gets K drawn without
    replacement; a smaller one all of them, in random order, then padding (mask False, index 0)."""
    index = np.zeros((len(members), bag_size), np.int64)
    mask = np.zeros((len(members), bag_size), bool)
    for b, cells in enumerate(members):
        if len(cells) == 0:
            raise ValueError(f"bag {b} has no cells")
        take = rng.permutation(len(cells))[:bag_size]
        index[b, : len(take)] = np.asarray(cells)[take]
        mask[b, : len(take)] = True
    return index, mask


def pad_bags(cells: list[np.ndarray], index: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """cells: per bag its (n_b, C, S, S) crops; index, mask (B, K) from `sample_bags` (indices
    into each bag's own crops) → (B, K, C, S, S), zeros where mask is False."""
    _, channels, height, width = cells[0].shape
    out = np.zeros((*mask.shape, channels, height, width), cells[0].dtype)
    for b, crops in enumerate(cells):
        out[b, mask[b]] = crops[index[b, mask[b]]]
    return out


def bag_crops(batch: dict) -> list[np.ndarray]:
    """Per image, its (n, C, S, S) uint8 crops, from a batch of `image_bags` rows (`crops` as
    bytes, `n_cells`, `side`) or of arrays."""
    out = []
    for i, crops in enumerate(batch["crops"]):
        if isinstance(crops, bytes | bytearray | memoryview | np.bytes_):
            side = int(batch["side"][i])
            crops = np.frombuffer(crops, np.uint8).reshape(int(batch["n_cells"][i]), -1, side, side)
        out.append(np.asarray(crops))
    return out


def image_bags(table):
    """pyarrow table of one image's cells (image_id, crop, labels) → one row: image_id, crops
    (the (n, C, S, S) uint8 array's bytes: one binary value, whatever n), n_cells, side, labels."""
    import pyarrow as pa

    from hpa_ray.core.schema import crops_to_numpy

    crops = crops_to_numpy(table)
    return pa.table({
        "image_id": table.column("image_id").slice(0, 1),
        "crops": pa.array([crops.tobytes()], pa.large_binary()),
        "n_cells": pa.array([len(crops)], pa.int32()),
        "side": pa.array([crops.shape[-1]], pa.int32()),
        "labels": table.column("labels").slice(0, 1),
    }, schema=image_bags_schema(table.schema))  # fmt: skip


def image_bags_schema(cells_schema):
    """The columns of `image_bags`' rows, for cells of the pyarrow schema `cells_schema`."""
    import pyarrow as pa

    return pa.schema([cells_schema.field("image_id"), ("crops", pa.large_binary()), ("n_cells", pa.int32()),
                      ("side", pa.int32()), cells_schema.field("labels")])  # fmt: skip


def collate_bags(batch: dict, bag_size: int | None, augment: bool, image_size: int | None = None,
                 rng: np.random.Generator | None = None) -> dict:  # fmt: skip
    """A numpy batch of images (`image_bags` rows, or `crops` as (n, C, S, S) arrays; `labels` (B, 19))
    → torch tensors: crops (B, K, C, S', S') uint8, mask (B, K) bool, labels (B, 19) float32.

    bag_size: K, cells drawn per image (training); None: every cell, K the most in the batch
    (validation, prediction). augment: each cell flipped / transposed at random.
    """
    import torch

    from hpa_ray.train.augment import flip_batch, resize_crops

    rng = rng or np.random.default_rng()
    cells = bag_crops(batch)
    if bag_size is None:  # every cell, in order
        index, mask = _in_order(cells, max(len(c) for c in cells))
    else:
        index, mask = sample_bags([np.arange(len(c)) for c in cells], bag_size, rng)
    crops = pad_bags(cells, index, mask)
    flat = crops.reshape(-1, *crops.shape[2:])
    if augment:
        flat = flip_batch(flat, rng.random((len(flat), 3)) < 0.5)
    if image_size and image_size != flat.shape[-1]:
        flat = resize_crops(flat, image_size)
    crops = flat.reshape(*mask.shape, *flat.shape[1:])
    return {"crops": torch.from_numpy(np.ascontiguousarray(crops)), "mask": torch.from_numpy(mask),
            "labels": torch.from_numpy(np.stack([np.asarray(y, np.float32) for y in batch["labels"]]))}  # fmt: skip


def _in_order(cells: list[np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray]:
    index = np.zeros((len(cells), size), np.int64)
    mask = np.zeros((len(cells), size), bool)
    for b, crops in enumerate(cells):
        index[b, : len(crops)] = np.arange(len(crops))
        mask[b, : len(crops)] = True
    return index, mask
