"""Segmentation stage: Ray Data pipeline vs a plain sequential loop, side by side.

Images: the four real 2048² HPA images in ../shared/data/hpa-real, linked N/4 times each
under new IDs. Both sides run the same backend and the same cut/encode code and write the
same Parquet. Timings are taken after a warm-up run of 4 images (workers import their modules
once; that first run is reported apart). Memory: peak summed RSS of the driver and every Ray
worker, sampled every 200 ms, for N and 2N images (streaming: it should not grow with N).
RSS counts shared object-store pages once per process that maps them: an upper bound.

    python bench/bench_segment.py [--images 24] [--json results.json] [KEY=VALUE overrides]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from hpa_ray.core.cells import cut_cells, upsample_labels
from hpa_ray.core.config import load_config
from hpa_ray.core.images import list_images, read_image
from hpa_ray.core.schema import CHANNELS, cells_table
from hpa_ray.runtime import session
from hpa_ray.segment.backends import build_backend, build_postprocess, build_preprocess
from hpa_ray.segment.config import SegmentConfig
from hpa_ray.segment.stage import run_segment

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hpa-real" / "images"


def link_images(dst: Path, n: int) -> Path:
    ids = sorted({p.name.rsplit("_", 1)[0] for p in REAL.glob("*_blue.png")})
    dst.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        for c in CHANNELS:
            (dst / f"copy{i:03d}-{ids[i % len(ids)]}_{c}.png").symlink_to(REAL / f"{ids[i % len(ids)]}_{c}.png")
    return dst


def sequential(images: Path, out: Path, cfg: SegmentConfig) -> tuple[float, int]:
    """The same work in one process, one image after another."""
    start = time.perf_counter()
    prep, backend, post = build_preprocess(cfg), build_backend(cfg), build_postprocess(cfg)
    tables = []
    for job in list_images(images).jobs:
        image = read_image(job["paths"])
        labels = upsample_labels(post(backend.infer([prep(image)])[0]), *image.shape[1:])
        cut = cut_cells(image, labels, cfg.crop_size)
        tables.append(cells_table(job["image_id"], *image.shape[1:], cut, ""))
    out.mkdir(parents=True)
    table = pa.concat_tables(tables)
    pq.write_table(table, out / "cells.parquet", compression="zstd")
    return time.perf_counter() - start, table.num_rows


class PeakRss:
    """Peak of summed RSS over this process and all Ray worker processes."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def _total() -> int:
        total = psutil.Process().memory_info().rss
        for p in psutil.process_iter(["name", "cmdline"]):
            try:
                cmd = " ".join(p.info["cmdline"] or [])
                if "ray::" in cmd or "default_worker.py" in cmd:
                    total += p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return total

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._total())
            time.sleep(0.2)

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--config", help="SegmentConfig YAML")
    parser.add_argument("--rounds", type=int, default=3, help="alternating sequential/Ray rounds")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = load_config(SegmentConfig, args.config, args.overrides)
    tmp = Path(tempfile.mkdtemp(prefix="bench_segment_"))
    n = args.images
    small, large = link_images(tmp / "in_n", n), link_images(tmp / "in_2n", 2 * n)
    t0 = time.perf_counter()
    session.init_ray()
    t_init = time.perf_counter() - t0
    cold = run_segment(link_images(tmp / "in_warm", 4), tmp / "ray_warm", cfg)  # workers import modules
    seq_times, ray_times = [], []
    for r in range(args.rounds):  # alternate, so that drifts of a noisy machine hit both sides
        t_seq, cells_seq = sequential(small, tmp / f"seq{r}", cfg)
        res_n = run_segment(small, tmp / f"ray{r}", cfg)
        seq_times.append(t_seq)
        ray_times.append(res_n.seconds)
    ratios = sorted(s / r for s, r in zip(seq_times, ray_times))
    with PeakRss() as mem_n:  # memory runs apart: the sampler itself takes CPU
        run_segment(small, tmp / "mem_n", cfg)
    with PeakRss() as mem_2n:
        res_2n = run_segment(large, tmp / "mem_2n", cfg)
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}",
        "backend": cfg.backend,
        "infer_on": cfg.infer_on,
        "images": n,
        "image_size": "2048x2048",
        "rounds": args.rounds,
        "sequential_s": [round(t, 2) for t in seq_times],
        "ray_stage_s": [round(t, 2) for t in ray_times],
        "sequential_images_per_s_median": round(n / sorted(seq_times)[len(seq_times) // 2], 2),
        "ray_images_per_s_median": round(n / sorted(ray_times)[len(ray_times) // 2], 2),
        "speedup_ray_vs_sequential_median": round(ratios[len(ratios) // 2], 2),
        "speedup_min_max": [round(ratios[0], 2), round(ratios[-1], 2)],
        "ray_init_s": round(t_init, 2),
        "first_run_4_images_s": round(cold.seconds, 2),
        "cells_sequential": cells_seq,
        "cells_ray": res_n.cells,
        "peak_rss_mib_n": round(mem_n.peak / 2**20),
        "peak_rss_mib_2n": round(mem_2n.peak / 2**20),
        "ray_images_per_s_2n": round(2 * n / res_2n.seconds, 2),
    }
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
