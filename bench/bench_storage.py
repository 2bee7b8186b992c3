"""Reading images and segmenting through hpa_ray.core.storage: local disk vs an S3 endpoint.

1. Decoding one channel file, side by side in alternating rounds on the four real 2048² HPA
   images: cv2.imread on the path (the code before the storage layer), storage.read_bytes +
   cv2.imdecode on the local path (what read_channel does now), the same from S3.
2. The segmentation stage (run_segment, classical backend) on N images from local disk into a
   local directory vs from S3 into S3, alternating, after a warm-up run of each.

The S3 here is moto's server on 127.0.0.1 (a Python process, no network): the S3 figures say
what the request path costs at most on this machine, not what AWS delivers.

    python bench/bench_storage.py [--images 16] [--rounds 3] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import cv2

from hpa_ray.core import storage
from hpa_ray.core.images import read_channel
from hpa_ray.segment.config import SegmentConfig
from hpa_ray.segment.stage import run_segment

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hpa-real" / "images"
BUCKET = "bench"


def start_s3() -> object:
    """moto's S3 on 127.0.0.1, reached through AWS_ENDPOINT_URL (Ray workers inherit it)."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_EC2_METADATA_DISABLED="true")  # fmt: skip
    boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).create_bucket(Bucket=BUCKET)
    return server


def decode_rounds(files: list[Path], s3_dir: str, rounds: int) -> dict:
    """Seconds per channel file for each way of reading, median over rounds."""
    ways = {
        "imread_path": lambda p: cv2.imread(str(p), cv2.IMREAD_UNCHANGED),
        "storage_local": lambda p: read_channel(str(p)),
        "storage_s3": lambda p: read_channel(storage.join(s3_dir, p.name)),
    }
    times: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(rounds):
        for name, read in ways.items():
            start = time.perf_counter()
            for path in files:
                read(path)
            times[name].append((time.perf_counter() - start) / len(files))
    return {k: statistics.median(v) for k, v in times.items()}


def link_images(dst: Path, n: int) -> Path:
    ids = sorted({p.name.rsplit("_", 1)[0] for p in REAL.glob("*_blue.png")})
    dst.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        for c in ("red", "green", "blue", "yellow"):
            (dst / f"copy{i:03d}-{ids[i % len(ids)]}_{c}.png").symlink_to(REAL / f"{ids[i % len(ids)]}_{c}.png")
    return dst


def segment_rounds(local_images: Path, s3_images: str, work: Path, rounds: int, cfg: SegmentConfig) -> dict:
    runs = {
        "local": lambda k: run_segment(local_images, work / f"out-{k}", cfg),
        "s3": lambda k: run_segment(s3_images, f"s3://{BUCKET}/out-{k}", cfg),
    }
    warm = {name: run("warm").seconds for name, run in runs.items()}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(rounds):
        for name, run in runs.items():
            result = run(r)
            assert (result.manifest.status == "ok").all(), result.failed
            times[name].append(result.seconds)
    return {"warmup_s": warm, "median_s": {k: statistics.median(v) for k, v in times.items()}, "all_s": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    server = start_s3()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        images = link_images(work / "images", args.images)
        s3_images = f"s3://{BUCKET}/images"
        storage.upload_dir(images, s3_images)
        real_files = sorted(REAL.glob("*.png"))
        storage.upload_dir(REAL, f"s3://{BUCKET}/real")
        decode = decode_rounds(real_files, f"s3://{BUCKET}/real", max(args.rounds, 3))
        segment = segment_rounds(images, s3_images, work, args.rounds, SegmentConfig(backend="classical"))
    server.stop()
    med = segment["median_s"]
    result = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}",
        "images": args.images,
        "decode_s_per_channel_file": decode,
        "decode_ratio_storage_local_vs_imread": decode["storage_local"] / decode["imread_path"],
        "decode_ratio_s3_vs_local": decode["storage_s3"] / decode["storage_local"],
        "segment": segment,
        "segment_images_per_s": {k: args.images / v for k, v in med.items()},
        "segment_ratio_s3_vs_local": med["s3"] / med["local"],
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
