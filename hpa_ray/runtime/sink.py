"""Ray Data sink for the segmentation stage: cells Parquet plus the matching manifest part.

Each write task gets per-image rows (manifest fields + the image's cells as Arrow IPC bytes)
and writes, under one part name derived from its image IDs, first OUT/cells/part-<name>.parquet, then
OUT/_manifest/part-<name>.parquet. A manifest part is the commit record: on resume, a cells
part without its manifest part is an interrupted write and is deleted (`clean_partial`).
OUT may be local or object storage (hpa_ray.core.storage).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
from ray.data.block import BlockAccessor
from ray.data.datasource import Datasink

from hpa_ray.core import layout, storage
from hpa_ray.core.schema import MANIFEST_COLUMNS

CELLS_DIR, MANIFEST_DIR = layout.CELLS, layout.MANIFEST_PARTS


def ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def read_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()


class CellsSink(Datasink):
    def __init__(self, out_dir: str):
        self.out_dir = str(out_dir)

    def on_write_start(self, schema=None) -> None:
        storage.makedirs(storage.join(self.out_dir, CELLS_DIR))
        storage.makedirs(storage.join(self.out_dir, MANIFEST_DIR))

    def write(self, blocks, ctx) -> dict:
        manifest, cells = [], []
        for block in blocks:
            for row in BlockAccessor.for_block(block).iter_rows(public_row_format=False):
                manifest.append({c: row[c] for c in MANIFEST_COLUMNS})
                if row["n_cells"]:
                    cells.append(read_ipc(row["cells"]))
        if not manifest:
            return {"images": 0, "cells": 0}
        # Named by the images it holds: a write task that Ray retries (its node died after writing)
        # replaces its own files instead of adding a second copy of the same cells.
        images = ",".join(sorted(str(m["image_id"]) for m in manifest))
        name = f"part-{hashlib.sha1(images.encode()).hexdigest()[:20]}.parquet"
        n_cells = sum(t.num_rows for t in cells)
        if cells:
            storage.write_parquet(storage.join(self.out_dir, CELLS_DIR, name), pa.concat_tables(cells))
        storage.write_parquet(storage.join(self.out_dir, MANIFEST_DIR, name), pa.Table.from_pylist(manifest))
        return {"images": len(manifest), "cells": n_cells}


def clean_partial(out_dir: str | Path) -> int:
    """Delete cells parts with no manifest part and stray temp files; return how many."""
    committed = {e.relative for e in storage.list_files(storage.join(out_dir, MANIFEST_DIR), "part-*.parquet")}
    removed = 0
    for sub in (CELLS_DIR, MANIFEST_DIR):
        for entry in storage.list_files(storage.join(out_dir, sub)):
            if entry.relative.endswith(".tmp") or (sub == CELLS_DIR and entry.relative not in committed):
                storage.delete_file(entry.path)
                removed += 1
    return removed
