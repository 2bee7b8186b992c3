"""The whole pipeline on the local autoscaling cluster, with a GPU worker lost mid-training;
records the autoscaler's timeline (docs/results/autoscaling.json) and prints the table of
docs/lab/scaling.md.

    python bench/autoscaling_run.py [--out docs/results/autoscaling.json] [--work /tmp/hpa-autoscaling]

Steps: `python -m hpa_ray.cluster up` (cluster.yaml's node types, workers from zero, idle timeout
0.5 min) → `sample-data` (24 training and 6 test images, 1024², stand-in U-Nets) → jobs/pipeline.sh
with conf/local-cluster presets (segment on GPU actors, folds, a search, 3 folds trained at once
on GPU workers, predict) while a busy GPU worker is killed after the first fold reports an
epoch → evaluate → wait until every worker is removed → timeline → down.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

from hpa_ray.cluster.local import state_dir

ROOT = Path(__file__).resolve().parents[1]
NAME = "bench-autoscaling"


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpa_ray.cluster", *args, *(("--name", NAME) if args[0] in
                          ("up", "down", "status", "timeline", "kill-node") else ())], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def _killer(run_dir: Path, env: dict, record: dict, started: float) -> None:
    """Kill a busy GPU worker once a fold of the final training has reported its first epoch."""
    while not any(run_dir.glob("fold-*/metrics.jsonl")):
        if record.get("pipeline_done"):
            return
        time.sleep(1)
    record["killed_at_s"] = round(time.time() - started, 1)
    record["kill"] = _cli("kill-node", "gpu_worker", "--running", "RayTrainWorker", env=env).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/results/autoscaling.json")
    parser.add_argument("--work", default="/tmp/hpa-autoscaling")
    args = parser.parse_args()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    work = Path(args.work)
    subprocess.run(["rm", "-rf", str(work)], check=True)
    sample = _cli("sample-data", str(work), "--train", "24", "--test", "6", "--size", "1024", env=env)
    assert sample.returncode == 0, sample.stderr
    up = _cli("up", "--idle-timeout-minutes", "0.5", "--dashboard-port", "0", env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    print(up.stdout, flush=True)
    cluster = json.loads((state_dir(NAME) / "cluster.json").read_text())
    started = cluster["started"]
    record: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
                    "python": platform.python_version(), "cluster_start": up.stdout.splitlines()}  # fmt: skip
    try:
        jobs_env = {**env, "RAY_ADDRESS": cluster["dashboard"], "RAY_AUTH_MODE": "token",
                    "HPA_RAY_PRESETS": "conf/local-cluster", "HPA_RAY_MODELS": str(work / "models")}  # fmt: skip
        killer = threading.Thread(target=_killer, args=(work / "out" / "runs" / "b2", env, record, started))
        killer.start()
        lines, stages = [], []
        pipeline = subprocess.Popen(["bash", "jobs/pipeline.sh", str(work)], cwd=ROOT, env=jobs_env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        for line in pipeline.stdout:
            at = round(time.time() - started, 1)
            if line.startswith("pipeline: ") and ":" not in line[len("pipeline: ") :] and ";" not in line:
                stages.append({"stage": line.split()[1], "started_s": at})
                print(f"[{at:6.1f} s] {line.strip()}", flush=True)
            elif not any(noise in line for noise in ("INFO", "SUCC", "WARNING working_dir", "----")):
                lines.append(f"[{at:6.1f} s] {line.rstrip()}")
        record["pipeline_exit"] = pipeline.wait()
        record["pipeline_done"] = True
        record["pipeline_done_s"] = round(time.time() - started, 1)
        killer.join()
        for stage, after in zip(stages, stages[1:] + [{"started_s": record["pipeline_done_s"]}]):
            stage["ended_s"] = after["started_s"]
        record["stages"] = stages
        said = ("warning", "lost", "fold ", "trial", "segment:", "predict:", "train:", "tune:", "marked dead", "error")
        record["console"] = [line for line in lines if any(k in line for k in said)]
        record.update(_outcome(work, env))
        deadline = time.time() + 600
        while "idle: none" not in _cli("status", env=env).stdout and time.time() < deadline:
            time.sleep(5)
        record["all_workers_removed_s"] = round(time.time() - started, 1)
        timeline = json.loads(_cli("timeline", env=env).stdout)
        record.update(events=timeline["events"], nodes=timeline["nodes"], node_types=timeline["node_types"])
    finally:
        print(_cli("down", env=env).stdout, flush=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    _print_table(record)
    return 0 if record.get("pipeline_exit") == 0 else 1


def _outcome(work: Path, env: dict) -> dict:
    import pandas as pd

    submission = pd.read_csv(work / "out" / "submission.csv").fillna("")
    expected = pd.read_csv(work / "sample_submission.csv")
    scores = subprocess.run([sys.executable, "-m", "hpa_ray.evaluate", "--submission", str(work / "out" /
                             "submission.csv"), "--truth", str(work / "test_truth.parquet")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    resumed = []
    for path in sorted((work / "out" / "runs" / "b2").glob("fold-*/metrics.jsonl")):
        reports = [json.loads(line) for line in path.read_text().splitlines()]
        resumed += [{"fold": path.parent.name, "epoch": r["epoch"], "resumed_from_epoch": r["resumed_from_epoch"]}
                    for r in reports if r["resumed_from_epoch"] >= 0][:1]  # fmt: skip
    metrics = (work / "out" / "runs" / "b2").glob("fold-*/metrics.csv")
    epochs = {p.parent.name: list(pd.read_csv(p).epoch) for p in metrics}
    return {"submission_rows": len(submission), "submission_ids_match": list(submission.ID) == list(expected.ID),
            "cells_predicted": int((submission.PredictionString != "").sum()),
            "mAP_tiny_model": json.loads(scores.stdout)["mAP"] if scores.returncode == 0 else None,
            "resumed": resumed, "fold_epochs": epochs}  # fmt: skip


def _print_table(record: dict) -> None:
    print("| t (s) | event |\n|---|---|")
    rows = [(s["started_s"], f"stage **{s['stage']}** starts") for s in record["stages"]]
    rows += [(e["t_s"], f"{'+' if e['action'] == 'add' else '−'}{e['count']} {e['node_type']}"
              + (f" ({e['reason']})" if e["reason"] else "")) for e in record["events"]]  # fmt: skip
    if "killed_at_s" in record:
        rows.append((record["killed_at_s"], "a busy gpu_worker killed (kill-node)"))
    rows.append((record["pipeline_done_s"], f"pipeline ends (exit {record['pipeline_exit']})"))
    rows.append((record["all_workers_removed_s"], "no worker left"))
    for at, text in sorted(rows):
        print(f"| {at:.0f} | {text} |")


if __name__ == "__main__":
    sys.exit(main())
