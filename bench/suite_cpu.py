"""The test suite's CPU work: each test's wall and busy-CPU seconds, summed by tier.

Is the README's test command bound by waits (Ray starting, a node's loss being noticed) or by
the CPU work of its tests? Wall time alone cannot say; this records both. The CPU is the whole
machine's busy time (psutil's cpu_times, every core), so it counts what a test starts: Ray's
processes, subprocesses, threads. Run nothing else beside it.

    PYTHONPATH=bench python -m pytest -q -p suite_cpu --suite-cpu out/suite_cpu.jsonl
    python bench/suite_cpu.py out/suite_cpu.jsonl [--top 20]

Each line of the record: {"id": nodeid, "wall": s, "cpu": s} (setup, call and teardown together).
The summary: per tier (tests/<tier>/) the tests, wall, CPU and the share of the cores kept busy;
then the floor, the CPU seconds over the cores: no scheduling of these tests on this machine
ends sooner.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from pathlib import Path

import psutil
import pytest


def busy_cpu_seconds() -> float:
    """Seconds every core of the machine has been busy since boot (not idle, not waiting on I/O;
    guest time is inside user time already)."""
    times = psutil.cpu_times()._asdict()
    return sum(value for key, value in times.items() if key not in ("idle", "iowait", "guest", "guest_nice"))


def busy_share(cpu_s: float, wall_s: float, cores: int) -> float:
    """The share of the cores kept busy: CPU / (wall × cores)."""
    return cpu_s / (wall_s * cores) if wall_s else 0.0


def pytest_addoption(parser):
    parser.addoption("--suite-cpu", metavar="PATH", help="append each test's wall and CPU seconds to PATH (JSON lines)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    path = item.config.getoption("--suite-cpu")
    if not path:
        yield
        return
    wall, cpu = time.time(), busy_cpu_seconds()
    yield
    record = {"id": item.nodeid, "wall": time.time() - wall, "cpu": busy_cpu_seconds() - cpu}
    with open(path, "a") as out:
        out.write(json.dumps(record) + "\n")


def tier_of(nodeid: str) -> str:
    """tests/<tier>/… → tier; anything else → "other"."""
    parts = nodeid.split("::")[0].split("/")
    return parts[1] if len(parts) > 2 and parts[0] == "tests" else "other"


def summarise(records: list[dict], cores: int) -> dict:
    """→ {"tiers": {tier: {"tests", "wall_s", "cpu_s", "busy"}}, "total": the same over all,
    "floor_s": CPU seconds / cores}; busy = CPU / (wall × cores)."""
    sums = defaultdict(lambda: {"tests": 0, "wall_s": 0.0, "cpu_s": 0.0})
    for record in records:
        for key in (tier_of(record["id"]), "total"):
            sums[key]["tests"] += 1
            sums[key]["wall_s"] += record["wall"]
            sums[key]["cpu_s"] += record["cpu"]
    for row in sums.values():
        row["busy"] = busy_share(row["cpu_s"], row["wall_s"], cores)
    total = sums.pop("total", {"tests": 0, "wall_s": 0.0, "cpu_s": 0.0, "busy": 0.0})
    return {"tiers": dict(sums), "total": total, "floor_s": total["cpu_s"] / cores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("record", type=Path, help="the JSON lines --suite-cpu wrote")
    parser.add_argument("--cores", type=int, default=os.cpu_count(), help="the cores of the machine it ran on")
    parser.add_argument("--top", type=int, default=15, help="list this many tests, the longest first")
    args = parser.parse_args()
    records = [json.loads(line) for line in args.record.read_text().splitlines() if line.strip()]
    summary = summarise(records, args.cores)
    print(f"{'tier':8} {'tests':>5} {'wall s':>8} {'CPU s':>8} {'busy':>5}")
    for name, row in [*summary["tiers"].items(), ("total", summary["total"])]:
        print(f"{name:8} {row['tests']:5d} {row['wall_s']:8.0f} {row['cpu_s']:8.0f} {row['busy']:5.0%}")
    print(f"floor on {args.cores} cores: {summary['floor_s']:.0f} s ({summary['floor_s'] / 60:.1f} min)\n")
    for record in sorted(records, key=lambda r: -r["wall"])[: args.top]:
        busy = busy_share(record["cpu"], record["wall"], args.cores)
        print(f"{record['wall']:7.1f} s {record['cpu']:7.1f} CPU-s {busy:4.0%}  {record['id']}")


if __name__ == "__main__":
    main()
