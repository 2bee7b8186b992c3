"""Where a small `segment` run's wall time goes: the cold start.

Each round runs, in fresh processes, on the four real 2048² HPA images (../shared/data/hpa-real):
- `cli`: `python -m hpa_ray.segment` as a user types it, wall time from the shell;
- `parts`: one Python process timing its steps: interpreter start, imports of the stage,
  `init_ray`, a first `run_segment` (4 images: the workers start and import their modules),
  a second one on the same images under new IDs (warm workers), Ray's shutdown.
`--repo DIR` (repeatable) runs the same from other checkouts (say, a `git worktree` of the
commit before a change), alternating with this one round by round, so that both sides see the
same machine noise.

    python bench/bench_cold_start.py --rounds 3 [--repo /tmp/before] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "hpa-real" / "images"

PARTS = r"""
import json, sys, time
import psutil
started = psutil.Process().create_time()
t0 = time.time()
from hpa_ray.runtime import session
from hpa_ray.segment.config import SegmentConfig
from hpa_ray.segment.stage import run_segment
t1 = time.time()
session.init_ray()
t2 = time.time()
run_segment(sys.argv[1], sys.argv[3] + "/a", SegmentConfig())
t3 = time.time()
run_segment(sys.argv[2], sys.argv[3] + "/b", SegmentConfig())
t4 = time.time()
import ray
ray.shutdown()
t5 = time.time()
print(json.dumps({"interpreter_s": t0 - started, "imports_s": t1 - t0, "init_ray_s": t2 - t1,
                  "first_run_s": t3 - t2, "warm_run_s": t4 - t3, "shutdown_s": t5 - t4}))
"""


def _link(dst: Path, prefix: str) -> Path:
    dst.mkdir(parents=True)
    for path in REAL.glob("*.png"):
        (dst / f"{prefix}{path.name}").symlink_to(path)
    return dst


def _env(repo: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, "PYTHONPATH": str(repo), "RAY_USAGE_STATS_ENABLED": "0"}


def one_round(repo: Path, tmp: Path, parts: bool = True) -> dict:
    first, second = _link(tmp / "in-a", "a-"), _link(tmp / "in-b", "b-")
    start = time.perf_counter()
    cli = subprocess.run([sys.executable, "-m", "hpa_ray.segment", "--images", str(first), "--out",
                          str(tmp / "cli")], cwd=repo, env=_env(repo), capture_output=True, text=True)  # fmt: skip
    wall = time.perf_counter() - start
    if cli.returncode:
        raise RuntimeError(cli.stderr[-2000:])
    if not parts:
        return {"cli_wall_s": wall}
    parts = subprocess.run([sys.executable, "-c", PARTS, str(first), str(second), str(tmp)], cwd=repo,
                           env=_env(repo), capture_output=True, text=True)  # fmt: skip
    if parts.returncode:
        raise RuntimeError(parts.stderr[-2000:])
    return {"cli_wall_s": wall, **json.loads(parts.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repo", type=Path, action="append", default=[], help="another checkout to compare")
    parser.add_argument("--cli-only", action="store_true", help="only the CLI's wall time")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    repos = {"this checkout": ROOT, **{str(r): r for r in args.repo}}
    rows: dict[str, list[dict]] = {name: [] for name in repos}
    for k in range(args.rounds):
        for name, repo in repos.items() if k % 2 == 0 else reversed(repos.items()):
            with tempfile.TemporaryDirectory() as tmp:
                rows[name].append(one_round(repo, Path(tmp), parts=not args.cli_only))
            print(f"round {k + 1} {name}: " + " ".join(f"{key} {v:.1f}" for key, v in rows[name][-1].items()))
    summary = {name: {key: statistics.median(r[key] for r in runs) for key in runs[0]} for name, runs in rows.items()}
    for name, medians in summary.items():
        print(f"median {name}: " + " ".join(f"{key} {v:.1f}" for key, v in medians.items()))
    if args.json:
        args.json.write_text(json.dumps({"rounds": rows, "median": summary}, indent=1))


if __name__ == "__main__":
    main()
