"""Where a machine's CPU goes over a window, by process kind: run it beside a long step.

    python bench/cpu_by_process.py --seconds 30 [--json OUT]

Reads every process's user + system CPU time from /proc at the start and the end of the window
and groups the difference by command (Ray's processes by their title, e.g. `ray::RayTrainWorker`;
idle Ray workers as one group). Prints each group's share of one core (100% = one core busy) and
the total in cores. Linux only; no Ray or project import, so it costs nothing beside what it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter


def _processes() -> dict[str, tuple[float, str]]:
    """pid → (CPU seconds so far, command)."""
    ticks = os.sysconf("SC_CLK_TCK")
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline") as f:
                command = f.read().replace("\0", " ").strip()
        except OSError:  # gone meanwhile
            continue
        found[pid] = ((int(fields[11]) + int(fields[12])) / ticks, command)
    return found


def _kind(command: str) -> str:
    """A process's group: Ray's title (`ray::Name`), else its program and first argument."""
    if "ray/_private/workers/default_worker.py" in command:
        return "ray worker (idle, no task yet)"
    words = command.split()
    if not words:
        return "(kernel or unnamed)"
    if words[0].startswith("ray::"):
        return words[0].split(".")[0]
    program = os.path.basename(words[0])
    script = next((os.path.basename(w) for w in words[1:] if not w.startswith("-")), "")
    return f"{program} {script}".strip()


def cpu_by_kind(seconds: float) -> tuple[float, Counter]:
    """(window length, CPU seconds per process kind) over `seconds` from now."""
    before, start = _processes(), time.perf_counter()
    time.sleep(seconds)
    after, window = _processes(), time.perf_counter() - start
    spent: Counter = Counter()
    for pid, (cpu, command) in after.items():
        spent[_kind(command)] += cpu - before.get(pid, (0.0, command))[0]
    return window, spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json", help="also write {kind: share of one core} here")
    args = parser.parse_args()
    window, spent = cpu_by_kind(args.seconds)
    print(f"window {window:.1f} s: {sum(spent.values()) / window:.2f} cores busy")
    for kind, cpu in spent.most_common(args.top):
        print(f"{100 * cpu / window:6.1f}%  {kind}")
    if args.json:
        shares = {kind: round(cpu / window, 4) for kind, cpu in spent.most_common()}
        with open(args.json, "w") as f:
            json.dump({"window_s": round(window, 1), "cores_busy": round(sum(spent.values()) / window, 3),
                       "by_kind": shares}, f, indent=2)  # fmt: skip


if __name__ == "__main__":
    main()
