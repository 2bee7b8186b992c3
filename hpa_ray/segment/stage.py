"""Segmentation stage: images → cells Parquet on Ray Data (`python -m hpa_ray.segment`).

list images (driver) → decode + prepare model input (CPU tasks) → infer (actor pool; GPUs for `hpa`) →
post-process + cut cells (CPU tasks) → CellsSink (OUT/cells/*.parquet, OUT/_manifest/*).
Streaming: every block holds one image. Resumable: committed images are skipped.
Input and output directories may be local or object storage (`s3://…`, `gs://…`).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

from hpa_ray.core import storage
from hpa_ray.core.config import ConfigError, load_config, write_resolved
from hpa_ray.core.images import list_images
from hpa_ray.core.layout import SegmentOutput
from hpa_ray.core.locks import owned_by_this_run
from hpa_ray.core.schema import MANIFEST_COLUMNS
from hpa_ray.runtime import cli, console, session
from hpa_ray.runtime.sink import CELLS_DIR, MANIFEST_DIR, CellsSink, clean_partial
from hpa_ray.segment.backends import (
    backend_names,
    check_backend,
    gpu_use,
    wants_gpu,
)
from hpa_ray.segment.config import SegmentConfig
from hpa_ray.segment.registry import backend_spec
from hpa_ray.segment.rows import SegmentActor, cut_row, decode_row, segment_row

EXIT_SOME_FAILED = 3  # exit status when at least one image has status "error"


@dataclass
class SegmentResult:
    manifest: pd.DataFrame  # one row per image ever seen in OUT (MANIFEST_COLUMNS)
    processed: int  # images run this time
    skipped: int  # images already done before this run
    cells: int  # cells written this run
    seconds: float  # wall time of this run
    unlisted: int = 0  # images in the directory that the labels CSV does not name (not run)

    @property
    def failed(self) -> pd.DataFrame:
        return self.manifest[self.manifest.status != "ok"]


def infer_in_actors(cfg: SegmentConfig) -> bool:
    """Actors hold models (and GPUs); a CPU backend runs fused with decode and cut instead."""
    return cfg.infer_on == "actors" or (cfg.infer_on == "auto" and backend_spec(cfg.backend, cfg.plugins).holds_model)


def _pool_size(cfg: SegmentConfig) -> int:
    if cfg.actors != "auto":
        return int(cfg.actors)
    resources = session.cluster_resources()
    key = "GPU" if wants_gpu(cfg) else "CPU"
    return max(1, int(resources.get(key, 1)))


def _num_blocks(n_jobs: int, cfg: SegmentConfig) -> int:
    """Images per block (so per task and per Parquet file): few, for an even spread over CPUs."""
    if cfg.images_per_block == "auto":
        cpus = max(1, int(session.cluster_resources().get("CPU", 1)))
        per_block = min(16, max(1, n_jobs // (4 * cpus)))
    else:
        per_block = cfg.images_per_block
    return max(1, -(-n_jobs // per_block))


def build_dataset(jobs: list[dict], cfg: SegmentConfig):
    """The lazy Ray Data pipeline over `jobs` (from list_images); `.write_datasink` runs it."""
    import ray

    ds = ray.data.from_items(jobs, override_num_blocks=_num_blocks(len(jobs), cfg))
    cfg_json = cfg.model_dump_json()
    if not infer_in_actors(cfg):
        # One task per image does it all: no image crosses the object store.
        return ds.map(segment_row, fn_kwargs={"cfg_json": cfg_json}, num_cpus=cfg.task_num_cpus)
    ds = ds.map(decode_row, fn_kwargs={"cfg_json": cfg_json}, num_cpus=cfg.task_num_cpus)
    ds = ds.map_batches(
        SegmentActor,
        fn_constructor_kwargs={"cfg_json": cfg_json},
        batch_size=cfg.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=_pool_size(cfg)),
        num_cpus=cfg.actor_num_cpus,
        num_gpus=cfg.actor_num_gpus if wants_gpu(cfg) else 0,
    )
    # One image per block again, so that post-processing spreads over every CPU.
    ds = ds.repartition(target_num_rows_per_block=1)
    return ds.map(cut_row, fn_kwargs={"cfg_json": cfg_json}, num_cpus=cfg.task_num_cpus)


def _warn_cpu_only(cfg: SegmentConfig) -> None:
    if gpu_use(cfg) == "if_available" and not wants_gpu(cfg):
        print(f"warning: the cluster has no GPU: the {cfg.backend} backend's models run on CPU actors (slow)",
              file=sys.stderr)  # fmt: skip


def warn_gpu_not_used(devices: pd.Series, actors: str) -> None:
    """`actors` asked Ray for GPUs; one line when their models still ran on the CPU (`devices`,
    one per image): a GPU that torch cannot see (a logical GPU of a local cluster, a CPU build)."""
    on_cpu = int((devices == "cpu").sum())
    if on_cpu:
        print(f"warning: the {actors} were given GPUs, but torch sees none there: the models of {on_cpu} "
              "image(s) ran on the CPU (logical GPUs of a local cluster, or a CPU build of torch)",
              file=sys.stderr)  # fmt: skip


def resource_requests(cfg: SegmentConfig, gpu: bool) -> dict[str, dict[str, float]]:
    """What each unit of segmentation work asks of a node (all from the config); `gpu`: whether
    the actors ask for GPUs (`wants_gpu` on a running cluster)."""
    requests = {"image task (decode, cut cells)": {"CPU": cfg.task_num_cpus}}
    if infer_in_actors(cfg):
        requests["segmentation actor"] = {"CPU": cfg.actor_num_cpus, **({"GPU": cfg.actor_num_gpus} if gpu else {})}
    return requests


def check_resources(cfg: SegmentConfig) -> None:
    """Refuse (ResourceError, exit 2) work that no node of the connected cluster can hold."""
    from hpa_ray.runtime.resources import check_requests, offered_node_types

    check_requests("segment", resource_requests(cfg, wants_gpu(cfg)), offered_node_types())


@contextlib.contextmanager
def operator_reservation(enabled: bool):
    """Ray Data reserves each operator a share of the CPUs so that stages cannot starve each
    other. The fused one-operator pipeline has nothing to protect, and on a 2-CPU machine the
    reservation held it to one task at a time (measured 1.2x vs 1.6x the sequential loop)."""
    import ray

    ctx = ray.data.DataContext.get_current()
    before = ctx.op_resource_reservation_enabled
    ctx.op_resource_reservation_enabled = enabled and before
    try:
        yield
    finally:
        ctx.op_resource_reservation_enabled = before


def _counter(out_dir: str, before: set[str]):
    """→ a function counting the images committed since `before` (manifest parts' row counts)."""
    import pyarrow.parquet as pq

    rows: dict[str, int] = {}

    def count() -> int:
        for part in _manifest_parts(out_dir):
            if part.path not in before and part.path not in rows:
                with storage.open_input(part.path) as f:
                    rows[part.path] = pq.ParquetFile(f).metadata.num_rows
        return sum(rows.values())

    return count


def _manifest_parts(out_dir: str) -> list[storage.Entry]:
    return storage.list_files(storage.join(out_dir, MANIFEST_DIR), "part-*.parquet")


def _prepare_out(out_dir: str, cfg: SegmentConfig, overwrite: bool) -> set[str]:
    """Start over or resume; returns the IDs of images already done."""
    if overwrite:
        for sub in (CELLS_DIR, MANIFEST_DIR):
            storage.delete_dir(storage.join(out_dir, sub))
        storage.delete_file(SegmentOutput(out_dir).manifest)
    previous = SegmentOutput(out_dir).config
    started = bool(_manifest_parts(out_dir))
    if started and storage.exists(previous):
        old = load_config(SegmentConfig, previous)
        if old != cfg:
            raise ConfigError(
                f"{out_dir} was segmented with another config ({previous}); "
                "rerun with that config, or pass --overwrite to start over"
            )
    write_resolved(cfg, previous)
    clean_partial(out_dir)
    if not started:
        return set()
    done = read_manifest_parts(out_dir)
    return set(done.loc[done.status == "ok", "image_id"])


def read_manifest_parts(out_dir: str | Path) -> pd.DataFrame:
    """Every manifest part, oldest first (a later failure's message replaces an earlier one's)."""
    parts = sorted(_manifest_parts(str(out_dir)), key=lambda e: (e.mtime, e.relative))
    if not parts:
        return pd.DataFrame(columns=list(MANIFEST_COLUMNS))
    # Threads: on object storage each part is a request (~1,400 parts for the 21,806 training images).
    with ThreadPoolExecutor(8) as pool:
        tables = list(pool.map(lambda e: storage.read_parquet(e.path), parts))
    return pd.concat(tables, ignore_index=True)


def _finalize_manifest(out_dir: str) -> pd.DataFrame:
    """OUT/images.parquet: one row per image; an ok row wins over earlier failures."""
    rows = read_manifest_parts(out_dir)
    for column, missing in (("node", ""), ("device", ""), ("working_scale", 0.0)):  # parts written before
        rows[column] = rows[column].fillna(missing) if column in rows else missing
    rows["_ok"] = rows.status == "ok"
    rows = rows.reset_index().sort_values(["_ok", "index"]).drop_duplicates("image_id", keep="last")
    manifest = rows.sort_values("image_id")[list(MANIFEST_COLUMNS)].reset_index(drop=True)
    table = pa.Table.from_pandas(manifest, preserve_index=False)
    storage.write_parquet(SegmentOutput(out_dir).manifest, table)
    return manifest


def _write_refused(out_dir: str, refused: list[dict]) -> None:
    if refused:
        rows = [
            {
                "image_id": r["image_id"],
                "status": "error",
                "error": r["error"],
                "n_cells": 0,
                "image_height": 0,
                "image_width": 0,
                "seconds": 0.0,
                "node": "",
                "device": "",
                "working_scale": 0.0,
            }
            for r in refused
        ]
        part = storage.join(out_dir, MANIFEST_DIR, f"part-listing-{time.time_ns()}.parquet")
        storage.write_parquet(part, pa.Table.from_pylist(rows))


def run_segment(
    input_dir: str | Path,
    out_dir: str | Path,
    cfg: SegmentConfig,
    labels_csv: str | Path | None = None,
    overwrite: bool = False,
) -> SegmentResult:
    """Segment every image under input_dir into out_dir; see the module docstring."""
    start = time.perf_counter()
    out_dir = storage.absolute(out_dir)
    listing = list_images(input_dir, labels_csv)
    storage.makedirs(out_dir)
    with owned_by_this_run(out_dir):
        return _segment_into(out_dir, listing, input_dir, cfg, labels_csv, overwrite, start)


def _segment_into(out_dir: str, listing, input_dir, cfg: SegmentConfig, labels_csv, overwrite: bool,
                  start: float) -> SegmentResult:  # fmt: skip
    done = _prepare_out(out_dir, cfg, overwrite)
    # Where the images came from, for the report's outlines over them.
    inputs = {
        "input_dir": storage.absolute(input_dir),
        "labels": storage.absolute(labels_csv) if labels_csv else None,
    }
    storage.write_text(SegmentOutput(out_dir).inputs, json.dumps(inputs, indent=2) + "\n")
    jobs = [j for j in listing.jobs if j["image_id"] not in done]
    _write_refused(out_dir, listing.refused)
    if jobs:
        check_backend(cfg)
        session.init_ray()
        check_resources(cfg)
        session.prewarm_workers(("ray.data", "hpa_ray.segment.rows", "hpa_ray.runtime.sink"))
        _warn_cpu_only(cfg)
        before = {p.path for p in _manifest_parts(out_dir)}
        with (
            operator_reservation(enabled=infer_in_actors(cfg)),
            console.Progress("segment", len(jobs), _counter(out_dir, before)),
        ):
            build_dataset(jobs, cfg).write_datasink(CellsSink(out_dir))
    manifest = _finalize_manifest(out_dir)
    ran = manifest[manifest.image_id.isin({j["image_id"] for j in jobs})]
    if jobs and wants_gpu(cfg):
        warn_gpu_not_used(ran.device, "segmentation actors")
    cells = int(ran.n_cells.sum())
    seconds = time.perf_counter() - start
    return SegmentResult(manifest, len(jobs), len(listing.jobs) - len(jobs), cells, seconds, listing.unlisted)


def summary_line(result: SegmentResult) -> str:
    m = result.manifest
    ok, failed = int((m.status == "ok").sum()), int((m.status != "ok").sum())
    rate = result.processed / result.seconds if result.seconds else 0.0
    return (
        f"segment: {len(m)} images: {ok} ok, {failed} failed, {result.skipped} already done; "
        f"{result.cells} cells this run; {result.processed} images in {result.seconds:.1f} s "
        f"({rate:.2f} images/s)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = cli.StageParser("hpa_ray.segment", __doc__,
                             epilog=f"Exit status: 0 all images ok, {EXIT_SOME_FAILED} some failed "
                             "(see OUT/images.parquet), 2 unusable inputs or config.")  # fmt: skip
    parser.flag("--images", required=True, old=("--input-dir",))
    parser.flag("--labels", help="CSV with ID,Label (optional; test images have none)")
    parser.out("dir", "where cells/ and images.parquet go (local or a URI)", old=("--output-dir",))
    parser.add_argument("--backend", help=f"overrides the config's backend: {', '.join(backend_names())}, or one a "
                        "plugin registers (segment.plugins)")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="start over instead of resuming")
    parser.config("conf/segment.yaml", "classical.scale=0.5")
    args = parser.parse(argv)
    console.setup(console.log_file_for(args.out, "segment"), args.verbose)
    overrides = list(args.overrides) + ([f"backend={args.backend}"] if args.backend else [])
    return cli.guarded(lambda: _segment_cli(args, overrides))


def _segment_cli(args, overrides: list[str]) -> int:
    cfg = load_config(SegmentConfig, args.config, overrides)
    result = run_segment(args.images, args.out, cfg, args.labels, args.overwrite)
    if result.unlisted:
        print(f"note: {result.unlisted} image(s) in {args.images} are not in {args.labels}; not run", file=sys.stderr)
    failed = [(row.image_id, row.error) for row in result.failed.itertuples()]
    console.print_failures(failed, SegmentOutput(args.out).manifest)
    m = result.manifest
    console.print_cell_less(list(m.image_id[(m.status == "ok") & (m.n_cells == 0)]))
    print(summary_line(result))
    print(json.dumps({"cells": SegmentOutput(args.out).cells, "manifest": SegmentOutput(args.out).manifest}))
    return EXIT_SOME_FAILED if len(result.failed) else 0
