"""Careless and hostile inputs: each refused quickly, as one `error:`/`invalid:` line and the
documented exit status, never a hang, a traceback or a lost file.

Here: those met by a stage running on a local Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pandas as pd

from tests.helpers import process_group, run_group

ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_group([sys.executable, *args], timeout=timeout, env=ENV)


def _hold_lock(directory) -> subprocess.Popen:
    """Another process that owns `directory` until it is killed."""
    code = (
        f"from hpa_ray.core.locks import owned_by_this_run\nimport time\n"
        f"with owned_by_this_run({str(directory)!r}):\n    print('held', flush=True)\n    time.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=ENV)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_segment_run_refuses_at_once_and_a_dead_owners_lock_is_taken_over(synth_set, tmp_path):
    out_dir = tmp_path / "seg"
    args = ["-m", "hpa_ray.segment", "--images", str(synth_set / "images"), "--labels",
            str(synth_set / "labels.csv"), "--out", str(out_dir), "crop_size=32"]  # fmt: skip
    holder = _hold_lock(out_dir)
    try:
        start = time.perf_counter()
        refused = _run(*args)
        assert refused.returncode == 2 and f"PID {holder.pid}" in refused.stderr, refused.stderr
        assert time.perf_counter() - start < 30 and not (out_dir / "cells").exists()
    finally:
        holder.kill()
        holder.wait()
    taken = _run(*args, timeout=600)
    assert taken.returncode == 0 and "taking over" in taken.stderr, taken.stderr
    assert not (out_dir / ".hpa_ray.lock").exists(), "released at the end"


def test_two_concurrent_segment_runs_never_write_a_cell_twice(synth_set, tmp_path):
    out_dir = tmp_path / "seg"
    args = [sys.executable, "-m", "hpa_ray.segment", "--images", str(synth_set / "images"), "--labels",
            str(synth_set / "labels.csv"), "--out", str(out_dir), "crop_size=32"]  # fmt: skip
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "env": ENV}
    with process_group(args, **pipes) as first:
        time.sleep(0.5)
        with process_group(args + ["images_per_block=2"], **pipes) as second:
            outs = [(p.wait(timeout=600), p.communicate()[1]) for p in (first, second)]
    codes = sorted(code for code, _ in outs)
    assert codes in ([0, 0], [0, 2]), outs
    if codes == [0, 2]:
        assert any(code == 2 and "in use by another run" in err for code, err in outs)
    cells = pd.read_parquet(out_dir / "cells", columns=["image_id", "cell_id"])
    assert not cells.duplicated().any() and len(cells) > 0


def test_predict_refuses_an_empty_id_and_writes_nothing(ray_local, synth_set, tmp_path):
    from tests.helpers import _make_run

    run_dir = _make_run(tmp_path / "run")
    pd.DataFrame({"ID": ["", "x"]}).to_csv(tmp_path / "ids.csv", index=False)
    out = _run("-m", "hpa_ray.predict", "--images", str(synth_set / "images"), "--run-dir", str(run_dir),
               "--out", str(tmp_path / "sub.csv"), "--ids", str(tmp_path / "ids.csv"))  # fmt: skip
    assert out.returncode == 2 and "line 2 has an empty ID" in out.stderr, out.stderr
    assert not list(tmp_path.glob("sub.csv*")), "no submission, no partial file"


def test_hpa_backend_on_a_cpu_only_ray_runs_on_cpu_actors(synth_set, tmp_path):
    from hpa_ray.segment.backends.standin import save_standin

    models = [f"hpa.{k}_model={save_standin(str(tmp_path / f'{k}.pth'))}" for k in ("nuclei", "cell")]
    start = time.perf_counter()
    out = _run("-m", "hpa_ray.segment", "--images", str(synth_set / "images"), "--out",
               str(tmp_path / "o"), "--backend", "hpa", "crop_size=32", *models, timeout=300)  # fmt: skip
    assert out.returncode == 0 and "no GPU" in out.stderr, out.stderr[-2000:]
    assert time.perf_counter() - start < 120
    assert json.loads(out.stdout.strip().splitlines()[-1])["cells"]
