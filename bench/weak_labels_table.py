"""Summarise `bench/weak_labels.py` JSON results: mean ± sd over data seeds, one row per
(setting, variant, scoring), as the Markdown table of docs/lab/quality.md.

    python bench/weak_labels_table.py RESULTS.json [...] [--ablation]
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict

import numpy as np

SIX_NAMES = ("nucleoli", "speckles", "actin", "spindle", "centrosome", "aggresome")


def _setting(path: str) -> str:
    return "sparse" if "sparse" in path else "mild" if "mild" in path else "?"


def _seed(path: str) -> str:
    found = re.search(r"_s(\d+)", path)
    return found.group(1) if found else path


def _fmt(values: list[float]) -> str:
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return "–"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


# The ablation of docs/lab/quality.md: (row label, variant, scoring); the oracle column is the same
# scoring of the variant's oracle (cell → oracle, bag → bag_oracle).
ABLATION = (
    ("cell", "cell", "fusion=cell"),
    ("cell + fusion (blend, w 0.7)", "cell", "fusion=blend,image_weight=0.7"),
    ("cell + fusion (blend, w 0.5)", "cell", "fusion=blend"),
    ("cell + fusion (product)", "cell", "fusion=product"),
    ("cell + fusion (w 0.5) + border rule", "cell", "fusion=blend,border_weight=0.8"),
    ("cell + fusion (w 0.5) + Negative rule", "cell", "fusion=blend,negative=complement"),
    ("bag (its cell head)", "bag", "fusion=cell"),
    ("bag + fusion (product: cell × image)", "bag", "fusion=product"),
    ("bag + fusion (blend, w 0.7)", "bag", "fusion=blend,image_weight=0.7"),
    ("bag + fusion (w 0.5) + border rule", "bag", "fusion=blend,border_weight=0.8"),
    ("bag + fusion (w 0.5) + Negative rule", "bag", "fusion=blend,negative=complement"),
)
ORACLE = {"cell": "oracle", "bag": "bag_oracle"}


def ablation_table(rows: dict[tuple, list[dict]]) -> None:
    print("| setting | variant | mAP | classification AP | oracle mAP | " + " | ".join(SIX_NAMES) + " |")
    print("|---" * (5 + len(SIX_NAMES)) + "|")
    for setting in ("sparse", "mild"):
        for label, variant, scoring in ABLATION:
            rs, oracle = rows.get((setting, variant, scoring), []), rows.get((setting, ORACLE[variant], scoring), [])
            if not rs:
                continue
            six = [_fmt([r["cls_ap_six"][i] for r in rs]) for i in range(len(SIX_NAMES))]
            print(f"| {setting} | {label} | {_fmt([r['mAP'] for r in rs])} | {_fmt([r['cls_ap'] for r in rs])} | "
                  f"{_fmt([r['mAP'] for r in oracle])} | " + " | ".join(six) + " |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+")
    parser.add_argument("--ablation", action="store_true", help="only docs/lab/quality.md's rows, with the oracles")
    args = parser.parse_args()
    rows: dict[tuple, list[dict]] = defaultdict(list)
    seeds = set()
    for path in args.results:
        with open(path) as f:
            results = json.load(f)["results"]
        for r in results:
            rows[(_setting(r["data"]), r["variant"], r["scoring"])].append(r)
            seeds.add(_seed(r["data"]))
    print(f"Seeds: {', '.join(sorted(seeds))}; mean ± sd over them.\n")
    if args.ablation:
        ablation_table(rows)
        return
    print("| setting | variant | scoring | mAP | classification AP | " + " | ".join(SIX_NAMES) + " |")
    print("|---" * (5 + len(SIX_NAMES)) + "|")
    for (setting, variant, scoring), rs in sorted(rows.items()):
        six = [_fmt([r["cls_ap_six"][i] for r in rs]) for i in range(len(SIX_NAMES))]
        print(f"| {setting} | {variant} | {scoring} | {_fmt([r['mAP'] for r in rs])} | "
              f"{_fmt([r['cls_ap'] for r in rs])} | " + " | ".join(six) + " |")  # fmt: skip


if __name__ == "__main__":
    main()
