"""The work on one image row inside Ray Data's tasks and actors (numpy in, numpy out):
decode → prepare the model input (`decode_row`), infer (`SegmentActor` over batches,
or `segment_row` fused with the rest for a CPU backend), post-process + cut the cells
(`cut_row`).
A failure becomes the row's `error`; it never stops the other images. Built by
`hpa_ray.segment.stage.build_dataset`.
"""

from __future__ import annotations

import functools
import time
import traceback
from pathlib import Path

import cv2
import numpy as np

from hpa_ray.core.cells import cut_cells, upsample_labels
from hpa_ray.core.images import ImageError, read_image
from hpa_ray.core.schema import CHANNELS, cells_table
from hpa_ray.runtime.sink import ipc_bytes
from hpa_ray.segment.backends import build_backend, build_postprocess, build_preprocess
from hpa_ray.segment.config import SegmentConfig

_EMPTY = np.zeros((len(CHANNELS), 1, 1), np.uint8)  # image placeholder of a failed row


def _error(exc: Exception, where: str) -> str:
    if isinstance(exc, ImageError):
        return str(exc)
    last = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" at {Path(last.filename).name}:{last.lineno}" if last else ""
    return f"{where} failed: {type(exc).__name__}: {exc}{at}"


def decode_row(row: dict, cfg_json: str) -> dict:
    """Read the channels and prepare the model input (CPU); a failure becomes the row's error."""
    start = time.perf_counter()
    image, model_input, error = _EMPTY, _EMPTY, ""
    try:
        image = read_image(list(row["paths"]), _worker_config(cfg_json).input_bits)
        model_input = _worker_steps(cfg_json)[0](image)
    except Exception as exc:  # noqa: BLE001 - one bad image must not stop the run
        image, error = _EMPTY, _error(exc, "decode")
    return {
        "image_id": row["image_id"],
        "labels_text": row["labels_text"],
        "image": image,
        "model_input": model_input,
        "error": error,
        "seconds": time.perf_counter() - start,
    }


def _infer_each(backend, images: list[np.ndarray], errors: list[str]) -> list[np.ndarray]:
    """backend.infer on the batch; when the batch fails, image by image to find the culprit."""
    try:
        return backend.infer(images)
    except Exception:  # noqa: BLE001 - find the image that breaks the batch
        raws = []
        for i, image in enumerate(images):
            try:
                raws.extend(backend.infer([image]))
            except Exception as exc:  # noqa: BLE001
                errors[i] = _error(exc, "segmentation")
                raws.append(_EMPTY)
        return raws


def _infer_batch(backend, batch: dict) -> dict:
    """Add the backend's raw output per row (`raw`); rows that already failed are passed on."""
    start = time.perf_counter()
    errors = list(batch["error"])
    todo = [i for i, e in enumerate(errors) if not e]
    raws = [_EMPTY] * len(errors)
    sub_errors = [""] * len(todo)
    for i, raw in zip(todo, _infer_each(backend, [batch["model_input"][i] for i in todo], sub_errors)):
        raws[i] = raw
    for i, e in zip(todo, sub_errors):
        errors[i] = e or errors[i]
    batch["raw"] = _object_array(raws)
    batch["error"] = np.array(errors, dtype=object)
    batch["device"] = np.array([_device_name(backend)] * len(errors), dtype=object)
    batch["seconds"] = batch["seconds"] + (time.perf_counter() - start) / max(len(errors), 1)
    return batch


def _device_name(backend) -> str:
    """Where a backend runs its model: "cuda" or "cpu" (a backend without a device: the CPU)."""
    device = getattr(backend, "device", None)
    return getattr(device, "type", None) or str(device or "cpu")


class SegmentActor:
    """Holds the backend (and its models) for the life of the actor; infers whole batches."""

    def __init__(self, cfg_json: str):
        self.backend = build_backend(_worker_config(cfg_json))

    def __call__(self, batch: dict) -> dict:
        return _infer_batch(self.backend, batch)


@functools.lru_cache(maxsize=2)
def _worker_backend(cfg_json: str):
    """One backend per worker process and config (Ray reuses worker processes)."""
    return build_backend(_worker_config(cfg_json))


def segment_row(row: dict, cfg_json: str) -> dict:
    """decode → infer → post-process → cut in one call: no intermediate block conversions."""
    decoded = decode_row(row, cfg_json)
    if not decoded["error"]:
        start, errors = time.perf_counter(), [""]
        backend = _worker_backend(cfg_json)
        decoded["raw"] = _infer_each(backend, [decoded["model_input"]], errors)[0]
        decoded["error"] = errors[0]
        decoded["device"] = _device_name(backend)
        decoded["seconds"] += time.perf_counter() - start
    return cut_row(decoded, cfg_json)


def _object_array(items: list) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


@functools.lru_cache(maxsize=2)
def _worker_config(cfg_json: str) -> SegmentConfig:
    # Parallelism is across images: OpenCV's own threads would only contend for the cores.
    cv2.setNumThreads(1)
    return SegmentConfig.model_validate_json(cfg_json)


@functools.lru_cache(maxsize=2)
def _worker_steps(cfg_json: str):
    """(preprocess, postprocess) of the backend, built once per worker process and config."""
    cfg = _worker_config(cfg_json)
    return build_preprocess(cfg), build_postprocess(cfg)


def cut_row(row: dict, cfg_json: str) -> dict:
    start = time.perf_counter()
    seg_cfg = _worker_config(cfg_json)
    image, error = row["image"], row["error"]
    _, height, width = image.shape
    out = {
        "image_id": row["image_id"],
        "status": "ok",
        "error": "",
        "n_cells": 0,
        "image_height": height,
        "image_width": width,
        "cells": b"",
        "working_scale": 0.0,
    }
    if error:
        out.update(status="error", error=error, image_height=0, image_width=0)
    else:
        try:
            raw = row["raw"]
            out["working_scale"] = round(raw.shape[-1] / width, 4)
            labels = upsample_labels(_worker_steps(cfg_json)[1](raw), height, width)
            cut = cut_cells(image, labels, seg_cfg.crop_size)
            out["n_cells"] = len(cut["cell_id"])
            if out["n_cells"]:
                out["cells"] = ipc_bytes(cells_table(row["image_id"], height, width, cut, row["labels_text"]))
        except Exception as exc:  # noqa: BLE001
            out.update(status="error", error=_error(exc, "post-processing/cutting"), n_cells=0)
    out["seconds"] = float(row["seconds"]) + time.perf_counter() - start
    out["node"] = _node_id()
    out["device"] = str(row.get("device", "")) if not error else ""
    return out


@functools.lru_cache(maxsize=1)
def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
