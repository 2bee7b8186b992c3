"""An idle local Ray's CPU with Ray's own overhead settings changed, one process per setting.

    python bench/ray_idle_knobs.py --rounds 2 [--actors 12] [--seconds 25]

Each run starts a local Ray as the stages do (`init_ray`), starts ACTORS idle actors (about as
many Ray processes as the demo's three folds keep), waits 12 s for start-up to settle, then
counts the whole machine's CPU seconds over SECONDS. The settings are environment variables Ray
reads at start: metrics collection, the task-event report interval, event-loop statistics.
Rounds alternate the settings. Prints one JSON line per run: the setting and the cores busy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "default": {},
    "no metrics": {"RAY_enable_metrics_collection": "0"},
    "task events every 10 s": {"RAY_task_events_report_interval_ms": "10000"},
    "no event stats": {"RAY_event_stats": "0"},
}


def _machine_cpu_seconds() -> float:
    ticks, total = os.sysconf("SC_CLK_TCK"), 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def one_run(actors: int, seconds: float) -> float:
    """Cores busy on the machine while a local Ray with `actors` idle actors sits idle."""
    import ray

    from hpa_ray.runtime.session import init_ray

    init_ray(num_cpus=2)

    @ray.remote(num_cpus=0)
    class Idle:
        def ping(self) -> int:
            return 1

    started = [Idle.remote() for _ in range(actors)]
    ray.get([a.ping.remote() for a in started])
    time.sleep(12)
    before, start = _machine_cpu_seconds(), time.perf_counter()
    time.sleep(seconds)
    busy = (_machine_cpu_seconds() - before) / (time.perf_counter() - start)
    ray.shutdown()
    return busy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--actors", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=25)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child process: run this setting once
    args = parser.parse_args()
    if args.one:
        print(json.dumps({"setting": args.one, "cores_busy": round(one_run(args.actors, args.seconds), 3)}))
        return
    for _ in range(args.rounds):
        for name, env in SETTINGS.items():
            command = [sys.executable, __file__, "--one", name, "--actors", str(args.actors),
                       "--seconds", str(args.seconds)]  # fmt: skip
            done = subprocess.run(command, env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                                  capture_output=True, text=True, check=True)  # fmt: skip
            print(done.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
