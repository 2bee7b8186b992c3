"""The `classical` backend's post-processing (`segment_cells`) per image: this checkout's
code beside another commit's, in one process, alternating rounds.

Images: the four real 2048² HPA images (../shared/data/hpa-real), prepared once (downscaled
to `classical.scale`); each round runs both versions over all four. The other commit's
`hpa_ray/segment/backends/classical.py` is read with `git show` and loaded under another name
with this checkout's config (which may have more fields than it reads). Commits before the stage
packages (e42d4ac) kept it at hpa_ray/backends/classical.py, importing modules that are gone: run
this script from a checkout of that time to compare with them.

    python bench/bench_classical_post.py --before e42d4ac [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hpa_ray.segment.backends import build_preprocess
from hpa_ray.segment.backends import classical as current
from hpa_ray.segment.config import SegmentConfig
from hpa_ray.segment.sections import ClassicalConfig

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "hpa_ray/segment/backends/classical.py"
sys.path.insert(0, str(ROOT / "bench"))
from seg_quality import SHARED, real_items  # noqa: E402


def module_at(ref: str, directory: Path, source: str = SOURCE, name: str = "classical_before"):
    """`source` (by default hpa_ray/segment/backends/classical.py) as of `ref`, loaded as a module
    of its own named `name`."""
    shown = subprocess.run(["git", "show", f"{ref}:{source}"], cwd=ROOT, capture_output=True, text=True)
    if shown.returncode:
        sys.exit(f"--before {ref}: git show found no {source} there ({shown.stderr.strip()}); commits before the "
                 "stage packages (e42d4ac) kept the package's modules elsewhere: run this script from a checkout of "
                 "that time to compare with them")  # fmt: skip
    path = directory / f"{name}.py"
    path.write_text(shown.stdout)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    raws = [build_preprocess(SegmentConfig())(image) for _, image, _ in real_items(SHARED)]
    p = ClassicalConfig()
    with tempfile.TemporaryDirectory() as tmp:
        versions = {"before": module_at(args.before, Path(tmp)), "now": current}
        seconds: dict[str, list[float]] = {name: [] for name in versions}
        for r in range(args.rounds):
            for name in sorted(versions, reverse=r % 2 == 1):  # alternate which goes first
                start = time.perf_counter()
                for raw in raws:
                    versions[name].segment_cells(raw, p)
                seconds[name].append((time.perf_counter() - start) / len(raws))
    ratios = [now / before for now, before in zip(seconds["now"], seconds["before"], strict=True)]
    result = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "before": args.before,
              "ms_per_image": {k: [round(v * 1000, 1) for v in s] for k, s in seconds.items()},
              "median_ratio_now_over_before": float(np.median(ratios))}  # fmt: skip
    for name, s in seconds.items():
        print(f"{name:6s} {np.median(s) * 1000:6.1f} ms/image (median of {args.rounds} rounds)")
    print(f"now / before: {result['median_ratio_now_over_before']:.2f} (median of per-round ratios)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
