"""Channel files as the HPA website serves them: one JPEG per channel, drawn in its own colour.

Each of the four real 2048² images in ../shared/data/hpa-real is written as four colour JPEGs
(red in R, green in G, blue in B, yellow in R and G) at several qualities, read back as the
segment stage reads them (`read_image`: each file's own colour), and segmented with `classical`.
Scores: F1 of one-to-one cell matching at IoU >= 0.6 against HPA's U-Net masks, beside the
original PNGs and beside the same JPEGs read as grey luminance (what `convert('L')` or
`cv2.imread(path, 0)` gives: red at 0.299 of its brightness, blue at 0.114).

With `--demo DIR` (a finished `python -m hpa_ray demo --out DIR`), the demo's test images are
written as colour JPEGs too and predicted with the demo's fold models: the task's mAP on the
JPEGs beside the PNGs (segmentation and classifier both read the JPEGs).

    python bench/jpeg_inputs.py --out docs/results/jpeg_inputs.json
    python bench/jpeg_inputs.py --demo out/demo --qualities 90 --out docs/results/jpeg_demo.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np

from hpa_ray.core.images import read_image
from hpa_ray.core.schema import CHANNELS
from hpa_ray.evaluate.score import match_cells
from hpa_ray.segment.sections import ClassicalConfig

BGR = {"red": [2], "green": [1], "blue": [0], "yellow": [2, 1]}  # where each channel's colour lies


def write_colour_jpegs(image: np.ndarray, stem: Path, quality: int) -> list[str]:
    """image (4, H, W) uint8 → four colour JPEGs `{stem}_{channel}.jpg`, their paths."""
    paths = []
    for channel, grey in zip(CHANNELS, image):
        colour = np.zeros((*grey.shape, 3), np.uint8)
        colour[..., BGR[channel]] = grey[..., None]
        path = f"{stem}_{channel}.jpg"
        cv2.imwrite(path, colour, [cv2.IMWRITE_JPEG_QUALITY, quality])
        paths.append(path)
    return paths


def demo_map(demo: Path, qualities: list[int], scratch: Path) -> dict:
    """The demo's models on its test images as PNGs (its own evaluation.json) and as colour JPEGs."""
    from hpa_ray.core.images import list_images
    from hpa_ray.evaluate.score import evaluate_files
    from hpa_ray.predict.config import PredictConfig
    from hpa_ray.predict.run import run_predict

    test = demo / "data" / "test"
    result = {"png": json.loads((demo / "evaluation.json").read_text())["mAP"]}
    jobs = list_images(test / "images").jobs
    for quality in qualities:
        images = scratch / f"demo-q{quality}"
        images.mkdir()
        for job in jobs:
            write_colour_jpegs(read_image(job["paths"]), images / job["image_id"], quality)
        submission = scratch / f"demo-q{quality}.csv"
        run_predict(images, demo / "runs" / "demo", submission, PredictConfig())
        result[f"q{quality}"] = evaluate_files(submission, test / "truth.parquet")["mAP"]
        print(
            f"demo: mAP {result['png']:.4f} on PNGs, {result[f'q{quality}']:.4f} on colour JPEGs of quality {quality}"
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--qualities", type=int, nargs="+", default=[95, 85, 75])
    parser.add_argument("--demo", type=Path, help="a finished demo's --out: its mAP on JPEGs beside PNGs")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.demo:
        with tempfile.TemporaryDirectory() as scratch:
            result = demo_map(args.demo, args.qualities, Path(scratch))
        if args.out:
            args.out.write_text(json.dumps(result, indent=1) + "\n")
        return
    from seg_quality import SHARED, f1, real_items, segment  # bench/; here, so tests can load write_colour_jpegs

    params, rows = ClassicalConfig(), []
    with tempfile.TemporaryDirectory() as scratch:
        for name, image, truth in real_items(SHARED):
            row = {"image": name, "png": match_cells(segment(params, image), truth)}
            for quality in args.qualities:
                paths = write_colour_jpegs(image, Path(scratch) / name, quality)
                own = read_image(paths)
                luma = np.stack([cv2.imread(p, cv2.IMREAD_GRAYSCALE) for p in paths])
                row[f"q{quality}"] = {
                    "mean_abs_diff": np.abs(own.astype(int) - image).mean(axis=(1, 2)).round(2).tolist(),
                    "own_colour": match_cells(segment(params, own), truth),
                    "luma": match_cells(segment(params, luma), truth),
                }
            rows.append(row)
            print(name, {k: v for k, v in row.items() if k != "image"}, flush=True)
    table = {"png": round(f1([r["png"] for r in rows]), 4)}
    for quality in args.qualities:
        for reading in ("own_colour", "luma"):
            table[f"q{quality}_{reading}"] = round(f1([r[f"q{quality}"][reading] for r in rows]), 4)
    print(json.dumps(table, indent=1))
    if args.out:
        args.out.write_text(json.dumps({"pooled_f1": table, "images": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
