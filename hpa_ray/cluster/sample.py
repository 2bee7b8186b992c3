"""`python -m hpa_ray.cluster sample-data ROOT`: a small synthetic set in jobs/pipeline.sh's
layout, to try the pipeline on the local cluster: ROOT/train/ (images), ROOT/train.csv,
ROOT/test/, ROOT/sample_submission.csv (Kaggle's columns), ROOT/test_truth.parquet (per-cell
truth, for `hpa_ray.evaluate`) and ROOT/models/ (stand-ins of HPA's two U-Net files: same
contract, no download; they find bright cells, see hpa_ray.segment.backends.standin).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pandas as pd

NUCLEI_FILE, CELL_FILE = "dpn_unet_nuclei_v1.pth", "dpn_unet_cell_3ch_v1.pth"  # what pipeline.sh reads


def make_sample(root: str | Path, n_train: int = 12, n_test: int = 4, size: int = 1024, seed: int = 0) -> Path:
    """Write the set under `root` (see the module docstring); → root."""
    from hpa_ray.segment.backends.standin import save_standin
    from hpa_ray.synth.config import SynthConfig
    from hpa_ray.synth.generate import generate

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    cfg = SynthConfig(size=size)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        for split, n, offset in (("train", n_train, 0), ("test", n_test, 1)):
            data = generate(Path(tmp) / split, n, seed + offset, cfg)
            shutil.rmtree(root / split, ignore_errors=True)
            shutil.move(data / "images", root / split)
            if split == "train":
                shutil.move(data / "labels.csv", root / "train.csv")
            else:
                ids = pd.read_csv(data / "labels.csv").ID
                pd.DataFrame({"ID": ids, "ImageWidth": size, "ImageHeight": size, "PredictionString": ""}).to_csv(
                    root / "sample_submission.csv", index=False)  # fmt: skip
                shutil.move(data / "truth.parquet", root / "test_truth.parquet")
    (root / "models").mkdir(exist_ok=True)
    save_standin(str(root / "models" / NUCLEI_FILE))
    save_standin(str(root / "models" / CELL_FILE))
    return root
