"""The demo's results over seeds as a Markdown table (docs/lab/quality.md):
    python bench/demo_table.py OUT_BASE      (the layout bench/demo_seeds.sh writes)
Per seed: mAP, prior-only mAP, their ratio, the six hard classes' AP, the demo's own time."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

HARD = ("Nucleoli", "Nuclear speckles", "Actin filaments", "Mitotic spindle", "Centrosome", "Aggresome")


def _seconds(log: Path) -> float:
    found = re.search(r"demo finished in (\d+) s", log.read_text(errors="replace"))
    return float(found.group(1)) if found else float("nan")


def _row(seed_dir: Path) -> dict:
    scores = json.loads((seed_dir / "evaluation.json").read_text())
    row = {"seed": seed_dir.name.removeprefix("seed-"), "mAP": scores["mAP"], "prior": scores["prior_mAP"],
           "seconds": _seconds(seed_dir.with_suffix(".log"))}  # fmt: skip
    return row | {name: scores["per_class_ap"].get(name) for name in HARD}


def _cell(value) -> str:
    return "—" if value is None or value != value else f"{value:.3f}"


def table(base: Path) -> str:
    rows = [_row(d) for d in sorted(base.glob("seed-*")) if (d / "evaluation.json").exists()]
    head = ["seed", "mAP", "prior-only", "ratio", *HARD, "demo time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["seed"], _cell(r["mAP"]), _cell(r["prior"]), f"{r['mAP'] / r['prior']:.1f}×",
                 *(_cell(r[h]) for h in HARD), f"{r['seconds']:.0f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    maps, secs = np.array([r["mAP"] for r in rows]), np.array([r["seconds"] for r in rows])
    lines.append(f"\nmean mAP {maps.mean():.3f} ± {maps.std(ddof=1) if len(rows) > 1 else 0:.3f} (sd) over "
                 f"{len(rows)} seeds; demo time {secs.min():.0f}–{secs.max():.0f} s")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1])))
