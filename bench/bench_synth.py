"""Synthetic images (`hpa_ray.synth.generate.make_image`): this checkout's code beside another
commit's, in one process: the same images, and the time per image.

For each image side in `--sizes` and each of `--seeds`, both versions make the image from the
same seed and every array (the four channels, the cell and nucleus labels, the per-cell labels)
is compared; then `--rounds` alternating rounds time both over those seeds. With `--generate N`,
the same rounds also time `generate` (what the synth stage and the demo run: N images of the
largest size written as PNGs with their truth, one process per core). The other commit's
`hpa_ray/synth/generate.py` is loaded with `git show` beside this checkout's other modules.

    python bench/bench_synth.py --before 38e1400 [--sizes 512,1024,2048] [--seeds 8] [--rounds 3] [--generate 24]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hpa_ray.synth import generate as current
from hpa_ray.synth.config import SynthConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_classical_post import module_at  # noqa: E402

ARRAYS = ("image", "cells", "nuclei", "cell_labels", "image_labels")


def _make(module, size: int, seed: int):
    return module.make_image(size, SynthConfig(size=size), np.random.default_rng(seed))


def _seconds_per_image(module, size: int, seeds: list[int]) -> float:
    start = time.perf_counter()
    for seed in seeds:
        _make(module, size, seed)
    return (time.perf_counter() - start) / len(seeds)


def _generate_seconds(module, size: int, n_images: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        module.generate(Path(tmp) / "set", n_images, 0, SynthConfig(size=size))
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="the commit to compare with")
    parser.add_argument("--sizes", default="512,1024,2048", help="image sides, comma-separated")
    parser.add_argument("--seeds", type=int, default=8, help="images per size (seeds 0..N-1)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--generate", type=int, default=0, help="also time generate() of this many images")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        before = module_at(args.before, Path(tmp), source="hpa_ray/synth/generate.py", name="synth_before")
        sys.modules[before.__name__] = before  # generate's worker processes find its functions by module name
        _compare(before, args)


def _compare(before, args) -> None:
    sizes, seeds = [int(s) for s in args.sizes.split(",")], list(range(args.seeds))
    result = {"before": args.before, "machine": platform.processor() or platform.machine(), "sizes": {}}
    for size in sizes:
        same = sum(
            all(np.array_equal(getattr(a, name), getattr(b, name)) for name in ARRAYS)
            for a, b in ((_make(before, size, s), _make(current, size, s)) for s in seeds)
        )
        rounds = [(_seconds_per_image(before, size, seeds), _seconds_per_image(current, size, seeds))
                  for _ in range(args.rounds)]  # fmt: skip
        old, new = (statistics.median(r[i] for r in rounds) for i in (0, 1))
        result["sizes"][size] = {"identical": f"{same}/{len(seeds)}", "before_s": old, "after_s": new,
                                 "ratio": new / old, "rounds": rounds}  # fmt: skip
        print(f"{size}²: identical {same}/{len(seeds)}; per image {old:.3f} s before, {new:.3f} s now: "
              f"{new / old:.2f}x", flush=True)  # fmt: skip
    if args.generate:
        size = max(sizes)
        rounds = [(_generate_seconds(before, size, args.generate), _generate_seconds(current, size, args.generate))
                  for _ in range(args.rounds)]  # fmt: skip
        old, new = (statistics.median(r[i] for r in rounds) for i in (0, 1))
        result["generate"] = {"images": args.generate, "size": size, "before_s": old, "after_s": new,
                              "ratio": new / old, "rounds": rounds}  # fmt: skip
        print(f"generate {args.generate} images of {size}²: {old:.1f} s before, {new:.1f} s now: {new / old:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
