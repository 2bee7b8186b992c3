"""The data contracts shared by every stage: channels, classes, labels, table columns.

One module owns these so that a crop's channel order or a label's meaning is decided once.
"""

from __future__ import annotations

import json
import re

import numpy as np

# Channel order of every image array and crop in the project: (C, H, W) with C in this order.
CHANNELS: tuple[str, ...] = ("red", "green", "blue", "yellow")
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
# How an image's files are named, as help texts and errors say it.
IMAGE_FILES = "{ID}_{" + ",".join(CHANNELS) + "}." + "|".join(ext[1:] for ext in IMAGE_EXTENSIONS)

CLASS_NAMES: tuple[str, ...] = (
    "Nucleoplasm",
    "Nuclear membrane",
    "Nucleoli",
    "Nucleoli fibrillar center",
    "Nuclear speckles",
    "Nuclear bodies",
    "Endoplasmic reticulum",
    "Golgi apparatus",
    "Intermediate filaments",
    "Actin filaments",
    "Microtubules",
    "Mitotic spindle",
    "Centrosome",
    "Plasma membrane",
    "Mitochondria",
    "Aggresome",
    "Cytosol",
    "Vesicles and punctate cytosolic patterns",
    "Negative",
)
NUM_CLASSES = len(CLASS_NAMES)
NEGATIVE = NUM_CLASSES - 1

# Columns of the cells table (OUT/cells/*.parquet), one row per cell.
CELL_COLUMNS: tuple[str, ...] = (
    "image_id",  # str
    "cell_id",  # int32, 1..N within the image (the label value in the image's mask)
    "image_height",  # int32
    "image_width",  # int32
    "bbox",  # list<int32>[4]: y0, x0, y1, x1 in full-image pixels, end exclusive
    "area",  # int64, pixels of the cell's full-image mask
    "touches_border",  # bool
    "mask_rle",  # str: the submission's mask encoding (see hpa_ray.core.masks)
    "crop",  # fixed_size_binary(C*S*S): a C-order uint8 (C, S, S) tensor, channels CHANNELS,
    #          pixels outside the cell zeroed; field metadata "shape" = [C, S, S] (crops_to_numpy)
    "labels",  # list<uint8>[NUM_CLASSES] multi-hot weak labels, null when unlabelled
)

# Columns of the images manifest (OUT/images.parquet), one row per input image.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "image_id",
    "status",  # "ok" or "error"
    "error",  # reason a person understands; "" when ok
    "n_cells",
    "image_height",
    "image_width",
    "seconds",  # wall time spent on the image (decode + segment + cut)
    "node",  # Ray node ID (hex) of the worker that cut the image's cells; "" when never run
    "device",  # where the segmentation model ran: cuda or cpu; "" when never run
    "working_scale",  # resolution segmented at, relative to the image's (backends.nuclei); 0 when never run
)

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_image_id(image_id: str) -> str | None:
    """Return why `image_id` is refused, or None when it is a safe file-name stem."""
    if not isinstance(image_id, str) or not image_id:
        return "empty image ID"
    if "/" in image_id or "\\" in image_id or ".." in image_id:
        return f"image ID {image_id!r} contains a path separator or '..'"
    if not _ID_RE.match(image_id):
        return f"image ID {image_id!r} has characters outside [A-Za-z0-9._-]"
    return None


def parse_labels(text: str) -> np.ndarray:
    """Parse a label string like ``"8|5|0"`` into a (NUM_CLASSES,) uint8 multi-hot vector.

    Raises ValueError naming the offending token when a label is not an integer 0..18.
    """
    tokens = [t.strip() for t in str(text).split("|")]
    if not tokens or tokens == [""]:
        raise ValueError("empty label")
    multi_hot = np.zeros(NUM_CLASSES, dtype=np.uint8)
    for token in tokens:
        if not re.fullmatch(r"\d+", token) or int(token) >= NUM_CLASSES:
            joined = re.fullmatch(r"\d+([\s,;]+\d+)+", token)  # "0 1": another tool's separator
            example = "|".join(re.findall(r"\d+", token))
            hint = f" (labels are separated by '|', e.g. {example})" if joined else ""
            raise ValueError(f"label {token!r} is not an integer 0-{NUM_CLASSES - 1}{hint}")
        multi_hot[int(token)] = 1
    return multi_hot


def format_labels(multi_hot: np.ndarray) -> str:
    """Inverse of parse_labels: (NUM_CLASSES,) multi-hot → ``"0|5|8"``."""
    return "|".join(str(i) for i in np.flatnonzero(multi_hot))


def crop_field(channels: int, size: int):
    """The `crop` column's Arrow field: one fixed-size binary value per cell, shape in metadata.

    Not Ray's list-backed tensor type: Parquet encodes a list<uint8> element by element, which
    made writing crops 10x slower than writing them as one binary value per cell.
    """
    import pyarrow as pa

    shape = json.dumps([channels, size, size])
    return pa.field("crop", pa.binary(channels * size * size), metadata={"shape": shape})


def crops_to_numpy(table, column: str = "crop") -> np.ndarray:
    """The crop column of a pyarrow Table → (N, C, S, S) uint8, zero-copy per chunk."""
    field = table.schema.field(column)
    shape = json.loads(field.metadata[b"shape"])
    chunks = [
        np.frombuffer(
            chunk.buffers()[1],
            np.uint8,
            count=len(chunk) * field.type.byte_width,
            offset=chunk.offset * field.type.byte_width,
        )
        for chunk in table.column(column).chunks
    ]
    flat = chunks[0] if len(chunks) == 1 else np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)
    return flat.reshape(-1, *shape)


def cells_table(image_id: str, height: int, width: int, cut: dict, labels_text: str):
    """One image's cells (from hpa_ray.core.cells.cut_cells) as a pyarrow Table of CELL_COLUMNS."""
    import pyarrow as pa

    n, channels, size, _ = cut["crop"].shape
    labels = parse_labels(labels_text).tolist() if labels_text else None
    crop = crop_field(channels, size)
    crops = pa.FixedSizeBinaryArray.from_buffers(crop.type, n, [None, pa.py_buffer(np.ascontiguousarray(cut["crop"]))])
    columns = {
        "image_id": pa.array([image_id] * n, pa.string()),
        "cell_id": pa.array(cut["cell_id"], pa.int32()),
        "image_height": pa.array([height] * n, pa.int32()),
        "image_width": pa.array([width] * n, pa.int32()),
        "bbox": pa.FixedSizeListArray.from_arrays(pa.array(cut["bbox"].reshape(-1), pa.int32()), 4),
        "area": pa.array(cut["area"], pa.int64()),
        "touches_border": pa.array(cut["touches_border"], pa.bool_()),
        "mask_rle": pa.array(cut["mask_rle"], pa.string()),
        "crop": crops,
        "labels": pa.array([labels] * n, pa.list_(pa.uint8())),
    }
    fields = [crop if name == "crop" else pa.field(name, arr.type) for name, arr in columns.items()]
    return pa.Table.from_arrays(list(columns.values()), schema=pa.schema(fields))
