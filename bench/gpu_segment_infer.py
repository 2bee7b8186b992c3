"""GPU check of the `hpa` backend: batched inference throughput and where its time goes.

Needs no Ray (runs on a bare GPU machine with torch, opencv, scipy, scikit-image, pandas,
pydantic, pycocotools). Stand-in U-Nets of HPA's contract are used (the real weights are not
reachable here): `width` adds a 3x3 conv layer of that many channels, to give the GPU work.

    python bench/gpu_segment_infer.py [--images 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hpa_ray.core.cells import cut_cells, upsample_labels
from hpa_ray.segment.backends.common import downscale
from hpa_ray.segment.backends.hpa import HpaBackend, raw_to_labels
from hpa_ray.segment.backends.standin import save_standin
from hpa_ray.segment.sections import HpaConfig
from hpa_ray.synth.config import SynthConfig
from hpa_ray.synth.generate import make_image


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--json")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    full = [make_image(2048, SynthConfig(size=2048), rng).image for _ in range(args.images)]
    images = [downscale(im, 0.25) for im in full]  # what the decode tasks hand to the actors
    tmp = Path(tempfile.mkdtemp())
    results = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "images": args.images,
        "image_size": 2048,
        "runs": [],
    }
    cpu = {
        "downscale_ms_per_image": 1000 * _timed(lambda: [downscale(im, 0.25) for im in full]) / len(full),
    }
    for width in (0, 64):
        nuclei = save_standin(str(tmp / f"n{width}.pth"), width=width)
        cell = save_standin(str(tmp / f"c{width}.pth"), width=width)
        backend = HpaBackend(HpaConfig(nuclei_model=nuclei, cell_model=cell, device="auto"))
        backend.infer(images[:2])  # warm-up: CUDA context, kernels
        for batch in (1, 4, 8, 16):
            seconds = _timed(lambda b=batch, m=backend: [m.infer(images[i : i + b]) for i in range(0, len(images), b)])
            results["runs"].append(
                {"standin_width": width, "batch": batch, "infer_images_per_s": round(len(images) / seconds, 1)}
            )
    raws = backend.infer(images[:8])
    post = _timed(lambda: [raw_to_labels(r, backend.cfg) for r in raws], repeat=1) / len(raws)
    labels = [upsample_labels(raw_to_labels(r, backend.cfg), 2048, 2048) for r in raws]
    cut = _timed(lambda: [cut_cells(im, lab, 260) for im, lab in zip(full[:8], labels)], repeat=1) / 8
    cpu.update(postprocess_ms_per_image=round(1000 * post, 1), cut_ms_per_image=round(1000 * cut, 1))
    cpu["downscale_ms_per_image"] = round(cpu["downscale_ms_per_image"], 1)
    results["cpu_per_image_one_core"] = cpu
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
