"""16-bit files holding fewer bits (a 10-, 12- or 14-bit camera's data): what the reader makes of them.

Each of the four real images (../shared/data/hpa-real, 8-bit) is written as N-bit data in 16-bit
PNG files (value × (2^N − 1) / 255, rounded), read back two ways, segmented with the default
`classical` configuration and scored against HPA's masks (F1 at IoU ≥ 0.6):
- full range: every 16-bit file scaled by 65535 (the reader before `images.bit_depth`);
- the reader (`images.read_image`): scaled from the depth the image's data use.

    python bench/bit_depth_quality.py --out docs/results/bit_depth.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np
from seg_quality import SHARED, f1, real_items, segment

from hpa_ray.core.images import read_image, to_uint8
from hpa_ray.core.schema import CHANNELS
from hpa_ray.evaluate.score import match_cells
from hpa_ray.segment.sections import ClassicalConfig


def write_at_depth(image: np.ndarray, bits: int, directory: Path, name: str) -> list[str]:
    """(4, H, W) uint8 → four 16-bit PNG files holding `bits`-bit data; their paths."""
    paths = [str(directory / f"{name}_{c}.png") for c in CHANNELS]
    for path, channel in zip(paths, image):
        cv2.imwrite(path, np.round(channel * ((2**bits - 1) / 255)).astype(np.uint16))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--bits", type=int, nargs="+", default=[16, 14, 12, 10])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    items, p = real_items(args.shared), ClassicalConfig()
    readers = {
        "full range (65535)": lambda paths: np.stack(
            [to_uint8(cv2.imread(q, cv2.IMREAD_UNCHANGED), 16) for q in paths]
        ),
        "read_image (the depth used)": read_image,
    }
    result: dict = {"8-bit files": f1([match_cells(segment(p, image), truth) for _, image, truth in items])}
    print(f"8-bit files as they are: F1 {result['8-bit files']:.3f}")
    with tempfile.TemporaryDirectory() as tmp:
        for bits in args.bits:
            paths = [write_at_depth(image, bits, Path(tmp), name) for name, image, _ in items]
            for reader_name, read in readers.items():
                counts = [match_cells(segment(p, read(q)), truth) for q, (_, _, truth) in zip(paths, items)]
                result[f"{bits}-bit data, {reader_name}"] = f1(counts)
                print(f"{bits}-bit data in 16-bit files, {reader_name}: F1 {f1(counts):.3f} {counts}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print("written:", args.out)


if __name__ == "__main__":
    main()
