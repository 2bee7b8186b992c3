"""Ray Data sink for the segmentation stage: cells Parquet plus the matching manifest part.

Each write task gets per-image rows (manifest fields + the image's cells as Arrow IPC bytes)
and writes, under one part name derived from its image IDs, first OUT/cells/part-<name>.parquet, then
OUT/_manifest/part-<name>.parquet. A manifest part is the commit record: on resume, a cells
part without its manifest part is an interrupted write and is deleted (`clean_partial`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from ray.data.block import BlockAccessor
from ray.data.datasource import Datasink

from hpa_ray.schema import MANIFEST_COLUMNS

CELLS_DIR, MANIFEST_DIR = "cells", "_manifest"


def ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def read_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()


def _write_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


class CellsSink(Datasink):
    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)

    def on_write_start(self, schema=None) -> None:
        (self.out_dir / CELLS_DIR).mkdir(parents=True, exist_ok=True)
        (self.out_dir / MANIFEST_DIR).mkdir(parents=True, exist_ok=True)

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
            _write_atomic(pa.concat_tables(cells), self.out_dir / CELLS_DIR / name)
        _write_atomic(pa.Table.from_pylist(manifest), self.out_dir / MANIFEST_DIR / name)
        return {"images": len(manifest), "cells": n_cells}


def clean_partial(out_dir: str | Path) -> int:
    """Delete cells parts with no manifest part and stray temp files; return how many."""
    out_dir = Path(out_dir)
    committed = {p.name for p in (out_dir / MANIFEST_DIR).glob("part-*.parquet")}
    removed = 0
    for sub in (CELLS_DIR, MANIFEST_DIR):
        for path in (out_dir / sub).glob("*"):
            if path.suffix == ".tmp" or (sub == CELLS_DIR and path.name not in committed):
                path.unlink()
                removed += 1
    return removed
